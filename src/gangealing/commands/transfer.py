"""`gangealing transfer`: carry key points from image A to image B through the congealed frame."""
from __future__ import annotations

import argparse

from ._common import Formatter, image_side, index_list

ORDER = 34

EPILOG = """key-point JSON (see docs/align.md):
  {"points": [[x, y], ...], "names": ["nose", ...], "visible": [true, ...], "permutation": [...]}
  x, y in pixels of image A (pixel centres at integers); names, visible and permutation optional.

examples:
  gangealing transfer a.jpg b.jpg --points a.json --ckpt cat --out transfer/
  gangealing transfer a.png b.png --points a.json --ckpt cat --legacy --input-size 256 --out t/   # the original's numbers
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from .align import add_model_args

    p = sub.add_parser("transfer", help="transfer key points from image A to image B",
                       formatter_class=Formatter, epilog=EPILOG,
                       description="Map key points of image A into the congealed frame and from there into image B. "
                                   "Writes B's points as JSON (<B>_points.json) and a picture of A and B side by side "
                                   "with matching coloured dots (transfer.png).")
    p.add_argument("image_a", help="the image the key points are annotated on")
    p.add_argument("image_b", help="the image to transfer them to")
    p.add_argument("--points", required=True, help="key-point JSON of image A")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--permutation", type=index_list, default=None,
                   help="comma-separated left/right swap of the point order (used where exactly one image is "
                        "aligned through its mirror); overrides the JSON's 'permutation'")
    p.add_argument("--legacy", action="store_true",
                   help="the original's key-point normalisation, to reproduce its transferred points exactly "
                        "(use with --input-size 256 for models evaluated as the original's pck.py does)")
    p.add_argument("--picture-height", type=image_side, default=384, help="height of each image in the picture")
    add_model_args(p, resolution=False)
    return p


def run(args: argparse.Namespace) -> int:
    from ..apps.transfer import transfer_keypoints
    from .align import load_congealer

    congealer, _ = load_congealer(args)
    res = transfer_keypoints(congealer, args.image_a, args.image_b, args.points, args.out,
                             permutation=args.permutation, picture_height=args.picture_height, legacy=args.legacy)
    outside = len(res.in_image) - sum(res.in_image)
    print(f"transferred {len(res.in_image)} point(s) to {args.image_b}"
          + (f" ({outside} outside the image)" if outside else "")
          + f": {res.points_path}, picture {res.picture_path}")
    return 0
