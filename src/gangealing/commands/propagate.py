"""`gangealing propagate`: carry an edit or a label map painted on the average congealed image to every image."""
from __future__ import annotations

import argparse
import sys

from ._common import Formatter, image_side, non_negative_int, positive_float, unit_float

ORDER = 32

EPILOG = """examples:
  gangealing propagate photos/ --ckpt cat --edit cat_edit.png --out edited/
  gangealing propagate photos/ --ckpt model.pt --labels parts.png --out parts/
  gangealing propagate photos/ --ckpt cat --edit hat.png --blend laplacian --kernel gaussian --sigma 1.2 --out hats/

the edit is an RGBA PNG the size of the average congealed image (gangealing align writes average.png):
paint on it, keep the alpha channel; transparent pixels leave the images untouched.
a label map is a grayscale (8/16-bit) or palette PNG of class ids on the same frame.

outputs (see docs/propagate.md):
  edited/propagated/000000_<name>.png   the edit composited onto each image, at the image's size
  edited/labels/000000_<name>.png       label maps: raw class ids; labels_color/: colour-coded
  edited/average_edited.png             the edit on --average (if given)
  edited/results.json, skipped.txt      per-image records; unreadable inputs
"""


def add_edit_args(p: argparse.ArgumentParser, splat_resolution: bool = True) -> None:
    """Flags shared by the commands that carry an edit (propagate, video, visualize)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--edit", default=None, help="RGBA image painted on the average congealed image")
    g.add_argument("--labels", default=None, help="label map (grayscale or palette PNG of class ids) on the congealed frame")
    if splat_resolution:
        p.add_argument("--resolution", type=image_side, default=None,
                       help="side of the congealed frame sampled for splatting (default: the larger of the edit's "
                            "side and the image's longest side)")
    p.add_argument("--blend", choices=("alpha", "laplacian", "laplacian-light"), default="alpha",
                   help="alpha compositing, or Laplacian-pyramid blending (softer seams)")
    p.add_argument("--kernel", choices=("bilinear", "gaussian"), default="bilinear",
                   help="splatting kernel; gaussian (the original's) also fills holes where the image is magnified")
    p.add_argument("--sigma", type=positive_float, default=1.0, help="width in pixels of the gaussian kernel")
    p.add_argument("--opacity", type=unit_float, default=1.0, help="multiplies the edit's alpha")


def edit_style(args: argparse.Namespace):
    """The :class:`gangealing.edit.EditStyle` of the flags :func:`add_edit_args` added (and --label-opacity, --fill)."""
    from ..edit import EditStyle

    defaults = EditStyle()
    return EditStyle(resolution=getattr(args, "resolution", None), blend=args.blend, kernel=args.kernel,
                     sigma=args.sigma, opacity=args.opacity,
                     label_opacity=getattr(args, "label_opacity", defaults.label_opacity),
                     fill=getattr(args, "fill", defaults.fill))


def load_edit_arg(args: argparse.Namespace):
    """The edit tensor named by --edit / --labels (None when neither)."""
    from ..data.edits import read_edit, read_label_map

    if getattr(args, "edit", None):
        return read_edit(args.edit)
    if getattr(args, "labels", None):
        return read_label_map(args.labels)
    return None


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from .align import add_model_args

    p = sub.add_parser("propagate", help="carry an edit or label map from the average congealed image to images",
                       formatter_class=Formatter, epilog=EPILOG,
                       description="Splat an RGBA edit or a label map drawn on the average congealed image into every "
                                   "image along its dense correspondence and composite it. Unreadable files are "
                                   "reported and skipped; inputs are never modified. Runs under torchrun.")
    p.add_argument("inputs", nargs="+", help="image folders (recursive), glob patterns or image files")
    p.add_argument("--out", required=True, help="output folder (must not be inside an input folder)")
    add_edit_args(p)
    p.add_argument("--average", default=None, help="the average congealed image, to write the edit drawn on it")
    p.add_argument("--fill", type=non_negative_int, default=0, help="label maps: id of pixels no label lands on")
    p.add_argument("--format", choices=("png", "jpg"), default="png", help="image format of the composited images")
    add_model_args(p, resolution=False, backend=True)
    return p


def run(args: argparse.Namespace) -> int:
    from ..distributed import is_main
    from .align import load_congealer

    if not args.edit and not args.labels:
        print("error: give an edit (--edit RGBA.png) or a label map (--labels LABELS.png)", file=sys.stderr)
        return 2
    from ..apps.propagate import propagate_files

    edit = load_edit_arg(args)
    congealer, dist = load_congealer(args)
    summary = propagate_files(congealer, args.inputs, args.out, edit, style=edit_style(args),
                              batch_size=args.batch_size, average=args.average, image_format=args.format, dist=dist)
    if is_main(dist):
        for s in summary.skipped:
            print(f"skipped {s['path']}: {s['reason']}")
        print(f"propagated to {summary.num_written} image(s) in {summary.out_dir}"
              + (f"; {len(summary.skipped)} unreadable skipped" if summary.skipped else ""))
    return 0
