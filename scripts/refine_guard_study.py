"""One row of the refine keypoint-guard study (docs/refine.md, "The guard with the similarity only"):
BENCHMARKS.md section 2's perturbed-MNIST task with a model adapted set-level by refine, with
the adapting defaults overridden.

    python scripts/refine_guard_study.py stages='"similarity"' steps=800
    python scripts/refine_guard_study.py --model gangealing-tiny-mnist3 tv_weight=1000
    python scripts/refine_guard_study.py --fit-split train stages='"similarity"' steps=800   # inductive

``KEY=VALUE`` overrides a RefineConfig field of the adapting defaults (values read as JSON). The
rows are the bench's own (``gangealing.apps.bench._pck_rows``: the same digits, perturbations,
points and seeds), for the model and the model refined (refine from nothing is not run).
``--fit-split train`` fits on perturbed MNIST *train* digits of the class instead (as many, two
copies each, perturbed as the bench perturbs the test digits, from another seed): the refined
model never sees the test digits it is measured on (inductive).
Prints PCK@0.1 and @0.05 of every method on both tasks, and the fit time.
"""
from __future__ import annotations

import argparse
import dataclasses
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
    p.add_argument("--fit-split", choices=("test", "train"), default="test",
                   help="digits refine is fitted on: the measured test digits (set-level, as the bench) or train digits")
    p.add_argument("--train-digits", type=int, default=None,
                   help="with --fit-split train: how many train digits (two copies each; default the bench's 200)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    over = R.parse_overrides(args.overrides)

    # The bench builds its refine config with default_config(from_model, ...): override the adapting one.
    base_config = R.default_config
    R.default_config = lambda from_model, **kw: base_config(from_model, **{**kw, **over}) if from_model else base_config(from_model, **kw)
    entry = MODELS[args.model]
    digit, path = entry.classes[0], str(resolve_model_file(entry.path))
    c = Congealer.from_checkpoint(path)
    cfg = B.BenchConfig(classic=False, refine=False)
    t0 = time.time()
    if args.fit_split == "train":
        fit_images = B._perturbed_train_digits(cfg, digit, args.train_digits or cfg.mnist_digits)
    else:  # the measured images, as _pck_rows makes them (two perturbed copies of each test digit)
        _, c1, c2, _ = B._pck_canvases(cfg, digit)
        fit_images = torch.cat([c1.images, c2.images])
    refined, info = B._refined(fit_images, cfg, base=c, seed=cfg.seed,
                               template=B._gan_templates({args.model: path}, {args.model: c}).get(args.model),
                               stages=over.get("stages", "all"))
    entries = {**MODELS, "refined": dataclasses.replace(entry, label=f"{entry.label} + refine ({args.fit_split} digits)")}
    rows = B._pck_rows(cfg, digit, {args.model: c, "refined": refined}, entries, lambda: None)
    print(f"fit: {info}")
    print(f"{args.model}, fitted on {args.fit_split} digits, overrides {over}: {time.time() - t0:.0f} s")
    for r in rows:
        print(f"{r['task']:30s} {r['method'][:70]:70s} {r['pck@0.1']:.4f} {r['pck@0.05']:.4f} {r.get('fit_seconds', '')}")


if __name__ == "__main__":
    main()
