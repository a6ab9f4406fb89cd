"""One row of the flow-grid study (docs/refine.md, "From nothing: the flow's grid"): BENCHMARKS.md
section 2's perturbed-MNIST keypoint task with refine *from nothing* fitted set-level on the 400
measured canvases, the scratch transformer's flow grid and flow warm-up set.

    python scripts/scratch_guard_study.py --flow-downsample 4
    python scripts/scratch_guard_study.py --flow-downsample 4 --flow-warmup 0.5
    python scripts/scratch_guard_study.py --lr-schedule cosine
    python scripts/scratch_guard_study.py --flow-downsample 4 --set tv_weight=100

The rows are the bench's own (``gangealing.apps.bench._pck_rows`` with ``refine=True`` and no
models: no alignment and refine from nothing). Prints PCK@0.1 and @0.05 of both tasks and the fit time.
"""
from __future__ import annotations

import argparse

import torch


def main() -> None:
    import gangealing.apps.bench as B
    import gangealing.train.refine as R

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flow-downsample", type=int, default=R.SCRATCH_FLOW_DOWNSAMPLE)
    p.add_argument("--flow-warmup", type=float, default=R.RefineConfig.flow_warmup,
                   help="fraction of the steps with the flow frozen (the similarity first)")
    p.add_argument("--lr-schedule", default=R.RefineConfig.lr_schedule, choices=("constant", "cosine"))
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="RefineConfig overrides of the from-nothing defaults (values read as JSON)")
    p.add_argument("--digit", default="3")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    over = {"flow_warmup": args.flow_warmup, "lr_schedule": args.lr_schedule, **R.parse_overrides(args.set)}

    # The bench builds the scratch transformer and its config inside _refined: set them there.
    scratch, config = R.scratch_stn, R.default_config
    R.scratch_stn = lambda *a, **kw: scratch(*a, **{"flow_downsample": args.flow_downsample, **kw})
    R.default_config = lambda from_model, **kw: config(from_model, **{**kw, **over})
    rows = B._pck_rows(B.BenchConfig(classic=False, refine=True), args.digit, {}, {}, lambda: None)
    print(f"--flow-downsample {args.flow_downsample} --flow-warmup {args.flow_warmup} --lr-schedule {args.lr_schedule} "
          f"--set {' '.join(args.set)}")
    for r in rows:
        print(f"{r['task']:30s} {r['method'][:60]:60s} {r['pck@0.1']:.4f} {r['pck@0.05']:.4f} {r.get('fit_seconds', '')}")


if __name__ == "__main__":
    main()
