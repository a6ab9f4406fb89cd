"""`gangealing demo`: an HTML report of what the committed models do on held-out real images."""
from __future__ import annotations

import argparse

from ._common import Formatter, device, image_side, positive_float, positive_int

ORDER = 1

EPILOG = """examples:
  gangealing demo                                   # committed models, held-out cats -> ./gangealing-demo/index.html
  gangealing demo --out /tmp/report --images 48
  gangealing demo --from-scratch --minutes 10       # train a GAN, then GANgealing, within 10 minutes

see docs/demo.md
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="a report of the committed models on held-out real images (offline, ~1 min)",
                       formatter_class=Formatter, epilog=EPILOG,
                       description="Align held-out real cat silhouettes (embedded animals test split) with the "
                                   "committed models and write an HTML report: inputs, congealed images, averages "
                                   "before and after, an edit carried to every image, dense correspondences as "
                                   "colours, clusters, and the benchmark numbers. With --from-scratch, train the "
                                   "whole pipeline within a time budget instead and report the quality reached.")
    p.add_argument("--out", default="gangealing-demo", help="report folder (created)")
    p.add_argument("--images", type=positive_int, default=24, help="held-out images shown in the pictures")
    p.add_argument("--display", type=image_side, default=112, help="side in pixels of each picture tile")
    p.add_argument("--device", type=device, default="cpu", help="cpu, cuda, cuda:1")
    p.add_argument("--seed", type=int, default=0, help="seed of the random pairs of the quick benchmark")
    p.add_argument("--from-scratch", action="store_true",
                   help="train a tiny GAN and GANgealing on --data within --minutes, then measure them")
    p.add_argument("--minutes", type=positive_float, default=10.0, help="time budget of --from-scratch")
    p.add_argument("--data", default="animals:cat", help="embedded dataset of --from-scratch (e.g. animals:cat, mnist:3)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def run(args: argparse.Namespace) -> int:
    from ..apps.demo import run_demo, run_from_scratch
    from ..fileio import check_output_folder

    check_output_folder(args.out)

    if args.from_scratch:
        r = run_from_scratch(args.out, minutes=args.minutes, data=args.data, device=args.device, seed=args.seed,
                             progress=not args.no_progress)
        print(f"GAN: {r.gan_steps} steps in {r.gan_seconds:.0f} s, Frechet distance {r.fd:.1f} (MobileNetV2 features)")
        print(f"GANgealing: {r.gangealing_steps} steps in {r.gangealing_seconds:.0f} s")
        if r.iou_congealed == r.iou_congealed:  # not NaN
            print(f"mask-transfer IoU on held-out pairs: {r.iou_unaligned:.3f} unaligned -> {r.iou_congealed:.3f} congealed")
        print(f"model: {r.model}")
        print(f"report: {r.report}")
        return 0
    r = run_demo(args.out, num_images=args.images, display=args.display, device=args.device, seed=args.seed,
                 progress=not args.no_progress)
    if r.missing:
        print(f"skipped (not found): {', '.join(r.missing)}")
    print(f"report: {r.index.resolve()}")
    return 0
