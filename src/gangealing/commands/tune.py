"""`gangealing tune`: choose a model's test-time similarity passes by self-consistency on your images."""
from __future__ import annotations

import argparse

from ._common import Formatter, device, new_model_file, non_negative_float, positive_float, positive_int

ORDER = 23

EPILOG = """examples:
  gangealing tune models/gangealing-tiny-cat/model.pt photos/                 # measure only: prints the table
  gangealing tune cat photos/ --out cat-tuned.pt                              # write a copy with the winner
  gangealing tune models/gangealing-tiny-mnist3/model.pt mnist:3 --out m3.pt \\
      --margin 0.43 --max-angle 45 --scale 0.7 1.3 --max-shift 0.15          # the bench's digit perturbations

Each image is placed twice on a canvas under two random similarities; points on its content are
transferred from one copy to the other through the congealed frame and compared with the known
truth (PCK at alpha x canvas). The similarity pass count with the best PCK@0.05 wins (ties: fewer).
The written copy applies it in every command (align, propagate, transfer, video, curate, serve,
bench); --iters on those commands still overrides it. See docs/align.md ("Test-time iterations").
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..apps.tune import TuneConfig

    d = TuneConfig()
    p = sub.add_parser("tune", help="choose the test-time similarity passes (--iters) by self-consistency on your images",
                       formatter_class=Formatter, epilog=EPILOG,
                       description="Measure how consistently a model aligns two randomly perturbed copies of each of "
                                   "your images at 1, 2, 3, 4 similarity passes (no labels needed), and optionally "
                                   "write a copy of the model that uses the best count.")
    p.add_argument("model", help="model checkpoint: our file, an original GANgealing .pt, or a released name")
    p.add_argument("data", help="image folder / zip / glob, a prepared dataset folder, or an embedded name (animals:cat, mnist:3)")
    p.add_argument("--out", default=None, help="write a copy of the model with the chosen iters here (never the input file)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--split", choices=("train", "test", "all"), default="train", help="split of an embedded dataset")
    p.add_argument("--images", type=positive_int, default=d.images, help="images measured, spread evenly over the set")
    p.add_argument("--candidates", type=positive_int, nargs="+", default=list(d.iters), help="similarity pass counts to try")
    p.add_argument("--max-angle", type=non_negative_float, default=d.max_angle, help="perturbation rotation, +- degrees")
    p.add_argument("--scale", type=positive_float, nargs=2, default=list(d.scale), metavar=("LOW", "HIGH"),
                   help="perturbation content scale range")
    p.add_argument("--max-shift", type=non_negative_float, default=d.max_shift, help="perturbation shift, +- fraction of the canvas")
    p.add_argument("--margin", type=non_negative_float, default=d.margin,
                   help="canvas side = image side x (1 + margin): room for the content to move (blank backgrounds)")
    p.add_argument("--points", type=positive_int, default=d.points, help="content points per image")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the perturbations and points")
    p.add_argument("--batch-size", type=positive_int, default=d.batch, help="images per forward pass")
    p.add_argument("--device", type=device, default=None, help="cpu, cuda, cuda:1 (default: a GPU if there is one)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    from ..apps.tune import TuneConfig, images_for, save_tuned, tune_iters
    from ..predictor import Congealer

    out = None if args.out is None else new_model_file(args.out, args.model, args.overwrite)
    cfg = TuneConfig(iters=tuple(args.candidates), images=args.images, max_angle=args.max_angle, scale=tuple(args.scale),
                     max_shift=args.max_shift, margin=args.margin, points=args.points, seed=args.seed, batch=args.batch_size)
    congealer = Congealer.from_checkpoint(args.model, device=args.device)
    images = images_for(congealer, args.data, split=args.split, count=cfg.images, progress=not args.no_progress)
    res = tune_iters(congealer, images, cfg, progress=not args.no_progress)
    print(f"self-consistency of {args.model} on {res.images} images of {args.data} "
          f"({res.canvas} px canvas; the model's current iters: {congealer.iters}):")
    print(res.to_markdown())
    print(f"best: iters {res.best_iters}")
    if out is not None:
        save_tuned(args.model, res, out, data=str(args.data))
        print(f"wrote {out} (test-time iters {res.best_iters})")
    return 0
