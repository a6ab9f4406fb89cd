"""`gangealing eval-gan`: how well a trained generator covers its real images."""
from __future__ import annotations

import argparse

from ._common import Formatter, device, finite_float, image_side, int_range, positive_int

ORDER = 11

DESCRIPTION = """\
Measure a generator against real images, all on the features of the ImageNet MobileNetV2 that
ships offline (pooled 1280-d output of its last layer, images resized to --resolution with
antialiased bilinear interpolation):
  fd         Fréchet distance (lower is better; not an Inception FID, compare only at equal --n,
             --n-real and --resolution)
  precision  share of generated samples inside the real images' k-NN manifold (realism)
  recall     share of real images inside the generated samples' k-NN manifold (coverage)
             (Kynkäänniemi et al. 2019, k = --k)
For a generator of the embedded MNIST, also the digits that --n-digits samples show, read by the
project's MNIST classifier (digit_counts, smallest and largest share). --grid writes the 8 x 8
sample grid of fixed latents (seed 0, constant noise). See docs/train-gan.md.
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("eval-gan", help="Fréchet distance, precision/recall (and digit histogram) of a generator",
                       formatter_class=Formatter, description=DESCRIPTION,
                       epilog="example:\n  gangealing eval-gan runs/gan-cat            # latest checkpoint of a run\n"
                              "  gangealing eval-gan models/gan-tiny-mnist/generator.pt --n 2000 --grid samples.png")
    p.add_argument("checkpoint", metavar="RUN_OR_CKPT", help="a train-gan run folder (its latest checkpoint) or a checkpoint")
    p.add_argument("--data", default=None, help="real images (default: the data the generator was trained on)")
    p.add_argument("--split", default=None, help="split of an embedded dataset (default: the training split)")
    p.add_argument("--n", type=int_range(4), default=5000, help="generated images")
    p.add_argument("--n-real", type=int_range(4), default=None, help="real images (default: --n, at most the dataset)")
    p.add_argument("--k", type=positive_int, default=3, help="nearest neighbours that set a manifold ball's radius")
    p.add_argument("--digits", default=None, action=argparse.BooleanOptionalAction,
                   help="digit histogram (default: on for generators of the embedded MNIST)")
    p.add_argument("--n-digits", type=positive_int, default=10_000, help="samples read for the digit histogram")
    p.add_argument("--grid", default=None, metavar="PNG", help="write the 8 x 8 fixed-seed sample grid here")
    p.add_argument("--resolution", type=image_side, default=128, help="feature-network input size")
    p.add_argument("--batch", type=positive_int, default=100, help="images per forward pass")
    p.add_argument("--seed", type=int, default=0, help="seed of the latents and of the real subset")
    p.add_argument("--psi", type=finite_float, default=1.0, help="truncation (1 = none)")
    p.add_argument("--device", type=device, default=None, help="cpu, cuda, ... (default: GPU if any)")
    p.add_argument("--cache-dir", default=None, help="prepared-dataset cache")
    return p


def run(args: argparse.Namespace) -> int:
    import json

    from ..train.gan import evaluate_gan

    res = evaluate_gan(args.checkpoint, data=args.data, n_fake=args.n, n_real=args.n_real, resolution=args.resolution,
                       batch=args.batch, seed=args.seed, psi=args.psi, device=args.device, cache_dir=args.cache_dir,
                       split=args.split, k=args.k, digits=args.digits, n_digits=args.n_digits, grid=args.grid)
    print(json.dumps({"checkpoint": args.checkpoint, **res.to_dict()}))
    return 0
