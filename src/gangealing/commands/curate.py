"""`gangealing curate`: an aligned, filtered copy of a dataset (similarity crops at full resolution)."""
from __future__ import annotations

import argparse

from ._common import Formatter, float_range, image_side, unit_float

ORDER = 37

EPILOG = """Per image (see docs/align.md): keep the best --fraction by flow score; crop it with the
similarity part of the warp at the raw image's full resolution; drop it when more than
--oob-threshold of the crop lies outside the image, or when the crop's side in raw pixels is below
--min-effective-resolution. DIR/curation.csv says for every input whether it was kept and why not.

examples:
  gangealing curate photos/ --ckpt cat --out curated/ --fraction 0.8
  gangealing flow-scores photos/ --ckpt cat --out scores.csv
  gangealing curate photos/ --ckpt cat --out curated/ --scores scores.csv --fraction 0.5
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from .align import add_model_args

    p = sub.add_parser("curate", help="write an aligned, filtered copy of a dataset",
                       formatter_class=Formatter, epilog=EPILOG,
                       description="Align a dataset with the similarity part of a trained model's warp, at the full "
                                   "resolution of each raw image, keeping the best-scoring images whose crop stays in "
                                   "the image and is sharp enough. Writes DIR/images/ and DIR/curation.csv. Inputs are "
                                   "never modified. Runs under torchrun.")
    p.add_argument("inputs", nargs="+", help="image folders (recursive), glob patterns or image files")
    p.add_argument("--out", required=True, help="output folder (must not be inside an input folder)")
    add_model_args(p, resolution=False)
    p.add_argument("--output-resolution", type=image_side, default=256, help="side of the aligned output images")
    p.add_argument("--fraction", type=float_range(0.0, 1.0, low_open=True), default=1.0,
                   help="keep this fraction of the images, the ones with the best flow scores")
    p.add_argument("--scores", default=None, help="flow scores CSV from `gangealing flow-scores` (else computed)")
    p.add_argument("--min-effective-resolution", type=float_range(0.0), default=192,
                   help="drop images whose crop is smaller than this many raw pixels on a side")
    p.add_argument("--oob-threshold", type=unit_float, default=0.025,
                   help="drop images when more than this fraction of the crop lies outside the raw image")
    p.add_argument("--format", choices=("png", "jpg"), default="png", help="image format of the outputs")
    return p


def run(args: argparse.Namespace) -> int:
    from ..apps.curate import curate_dataset
    from ..distributed import finish, is_main
    from .align import load_congealer

    congealer, dist = load_congealer(args)
    summary = curate_dataset(congealer, args.inputs, args.out, output_resolution=args.output_resolution,
                             fraction=args.fraction, min_effective_resolution=args.min_effective_resolution,
                             oob_threshold=args.oob_threshold, scores=args.scores, batch_size=args.batch_size,
                             image_format=args.format, dist=dist)
    if is_main(dist):
        reasons = {}
        for r in summary.records:
            if not r["kept"]:
                reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
        print(f"kept {summary.num_kept} of {len(summary.records)} image(s) in {summary.out_dir}/images"
              + ("; dropped: " + ", ".join(f"{n} {k}" for k, n in sorted(reasons.items())) if reasons else ""))
    finish(dist)
    return 0
