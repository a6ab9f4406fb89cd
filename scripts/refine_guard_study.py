"""One row of the refine keypoint-guard study (docs/refine.md, "The guard with the similarity only"):
BENCHMARKS.md section 2's perturbed-MNIST task with a model adapted set-level by refine, with
the adapting defaults overridden.

    python scripts/refine_guard_study.py stages='"similarity"' steps=800
    python scripts/refine_guard_study.py --model gangealing-tiny-mnist3 tv_weight=1000

``KEY=VALUE`` overrides a RefineConfig field of the adapting defaults (values read as JSON). The
rows are the bench's own (``gangealing.apps.bench._pck_rows``: the same digits, perturbations,
points and seeds); refine from nothing is not run (its rows show an untrained transformer).
Prints PCK@0.1 and @0.05 of every method on both tasks, and the fit time.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch


def main() -> None:
    import gangealing.apps.bench as B
    import gangealing.train.refine as R
    from gangealing.predictor import Congealer
    from gangealing.zoo import MODELS, resolve_model_file

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="RefineConfig overrides for the adapted model")
    p.add_argument("--model", default="gangealing-tiny-mnist3", choices=[n for n, e in MODELS.items()
                                                                          if e.dataset == "mnist" and len(e.classes) == 1])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    over = {k: json.loads(v) for k, v in (a.split("=", 1) for a in args.overrides)}
    over = {k: tuple(v) if isinstance(v, list) else v for k, v in over.items()}

    # The bench builds its refine config with default_config(from_model, ...): override the adapting one.
    base_config = R.default_config
    R.default_config = lambda from_model, **kw: (dataclasses.replace(base_config(from_model, **kw), **over)
                                                 if from_model else base_config(from_model, **kw))
    fit = B._refined

    def refined(images, cfg, base=None, seed=0, template=None):
        if base is None:  # refine from nothing is not what this study varies: an untrained stand-in
            return Congealer(R.scratch_stn(seed=seed), flip=False), dict(fit_seconds=0.0)
        return fit(images, cfg, base=base, seed=seed, template=template)

    B._refined = refined
    path = str(resolve_model_file(MODELS[args.model].path))
    c = Congealer.from_checkpoint(path)
    t0 = time.time()
    rows = B._pck_rows(B.BenchConfig(classic=False), MODELS[args.model].classes[0], {args.model: c}, MODELS,
                       lambda: None, B._gan_templates({args.model: path}, {args.model: c}))
    print(f"{args.model}, overrides {over}: {time.time() - t0:.0f} s")
    for r in rows:
        print(f"{r['task']:30s} {r['method'][:70]:70s} {r['pck@0.1']:.4f} {r['pck@0.05']:.4f} {r.get('fit_seconds', '')}")


if __name__ == "__main__":
    main()
