"""`gangealing eval-gan`: Fréchet distance of a trained generator against its real images."""
from __future__ import annotations

import argparse

from ._common import Formatter

ORDER = 11

DESCRIPTION = """\
Measure a generator's sample quality as a Fréchet distance between real and generated images on
the features of the ImageNet MobileNetV2 that ships offline (pooled 1280-d output of its last
layer, images resized to --resolution with antialiased bilinear interpolation). Lower is better.
Values compare with each other only at the same --n, --n-real and --resolution; they are not
Inception FIDs. See docs/train-gan.md.
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("eval-gan", help="Fréchet distance of a trained generator (offline MobileNetV2 features)",
                       formatter_class=Formatter, description=DESCRIPTION,
                       epilog="example:\n  gangealing eval-gan runs/gan-cat            # latest checkpoint of a run\n"
                              "  gangealing eval-gan models/gan-tiny-cat/generator.pt --n 2000")
    p.add_argument("checkpoint", metavar="RUN_OR_CKPT", help="a train-gan run folder (its latest checkpoint) or a checkpoint")
    p.add_argument("--data", default=None, help="real images (default: the data the generator was trained on)")
    p.add_argument("--split", default=None, help="split of an embedded dataset (default: the training split)")
    p.add_argument("--n", type=int, default=5000, help="generated images")
    p.add_argument("--n-real", type=int, default=None, help="real images (default: --n, at most the dataset)")
    p.add_argument("--resolution", type=int, default=128, help="feature-network input size")
    p.add_argument("--batch", type=int, default=100, help="images per forward pass")
    p.add_argument("--seed", type=int, default=0, help="seed of the latents and of the real subset")
    p.add_argument("--psi", type=float, default=1.0, help="truncation (1 = none)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: GPU if any)")
    p.add_argument("--cache-dir", default=None, help="prepared-dataset cache")
    return p


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from ..train.gan import evaluate_gan

    res = evaluate_gan(args.checkpoint, data=args.data, n_fake=args.n, n_real=args.n_real, resolution=args.resolution,
                       batch=args.batch, seed=args.seed, psi=args.psi, device=args.device, cache_dir=args.cache_dir,
                       split=args.split)
    print(json.dumps({"checkpoint": args.checkpoint, **dataclasses.asdict(res)}))
    return 0
