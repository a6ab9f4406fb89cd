"""Refine the K = 10 MNIST clustering model on random MNIST *train* digits (inductive: never the test
digits), then route the first 2,000 test digits by the refined model's GAN targets and print the
Hungarian accuracy (BENCHMARKS.md section 3).

    python scripts/cluster_refine_study.py N_TRAIN STEPS OUT.pt [KEY=VALUE ...]

KEY=VALUE override the adapting defaults (``gangealing.train.refine.default_config(True)``), e.g.
``template=mean``. Every head is adapted on the digits routed to it (docs/refine.md, "Clustering
models"); the model is written to OUT.pt (``meta["test"]["routing"] = "targets"``).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    from gangealing.build import load_model
    from gangealing.checkpoint import load_checkpoint
    from gangealing.data.embedded import digits_as_images, load_embedded, mnist_test_set
    from gangealing.metrics.alignment import hungarian_accuracy
    from gangealing.predictor import Congealer, target_router
    from gangealing.train.refine import Refiner, default_config, save_refined
    from gangealing.zoo import resolve_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", type=int, help="random MNIST train digits to refine on (seed 0)")
    ap.add_argument("steps", type=int)
    ap.add_argument("out")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    ap.add_argument("--model", default="gangealing-mnist-k10")
    ap.add_argument("--test", type=int, default=2000, help="first N test digits routed")
    args = ap.parse_args()
    over = {}
    for kv in args.overrides:
        k, v = kv.split("=", 1)
        try:
            over[k] = int(v)
        except ValueError:
            try:
                over[k] = float(v)
            except ValueError:
                over[k] = v

    src = str(resolve_model(args.model))
    ck = load_checkpoint(src)
    model = load_model(ck)
    router = target_router(model, ck, None, torch.device("cpu"))
    base = Congealer.from_checkpoint(src, routing="targets")
    d = load_embedded("mnist", "train")
    idx = np.random.default_rng(0).choice(len(d.labels), args.n, replace=False)
    x = torch.cat([base.prepare(digits_as_images(torch.from_numpy(d.images[idx[s:s + 500], ..., 0].copy())))[0]
                   for s in range(0, args.n, 500)])
    cfg = default_config(True, steps=args.steps, **over)
    t0 = time.time()
    res = Refiner(model.stn, cfg, router=router).fit(x, progress_bar=False)
    print(f"fit {time.time() - t0:.0f} s: {res.steps} steps (best {res.best_step}), held-out distance "
          f"{res.initial_holdout_loss:.4f} -> {res.holdout_loss:.4f}, stopped by {res.stopped}", flush=True)
    test = dict(ck.meta.get("test") or {}, routing="targets")
    save_refined(res, args.out, cfg=cfg, base=src, base_model=model, data=f"mnist train, {args.n} random digits", test=test)

    torch.set_grad_enabled(False)
    digits, labels = mnist_test_set()
    digits, labels = digits[: args.test], labels[: args.test]
    for name, path in ((args.model, src), ("refined", args.out)):
        c = Congealer.from_checkpoint(path, routing="targets")
        pred = torch.cat([c.align(digits_as_images(digits[s:s + 100])).cluster for s in range(0, len(digits), 100)])
        print(f"{name}: accuracy on the first {len(digits)} test digits (nearest GAN target) "
              f"{hungarian_accuracy(pred.numpy(), labels):.4f}; cluster sizes {torch.bincount(pred, minlength=10).tolist()}",
              flush=True)


if __name__ == "__main__":
    main()
