"""`gangealing visualize`: an animation of images smoothly warping into alignment, a label riding along."""
from __future__ import annotations

import argparse

from ._common import Formatter, image_side, int_range, positive_float, positive_int, unit_float

ORDER = 38

EPILOG = """examples:
  gangealing visualize photos/ --ckpt cat --out congealing.gif
  gangealing visualize a.jpg b.jpg c.jpg d.jpg --ckpt cat --edit cat_edit.png --out edit.mp4 --frames 60
  gangealing visualize photos/ --ckpt model.pt --labels parts.png --max-images 16 --boomerang --out parts.gif

the first --max-images images are tiled into each frame; frame t samples every image with a grid eased
from the identity to its congealing grid. .gif is written with Pillow, .mp4/.mov/.webm/.mkv with PyAV.
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from .align import add_model_args
    from .propagate import add_edit_args

    p = sub.add_parser("visualize", help="GIF / video of images warping into alignment",
                       formatter_class=Formatter, epilog=EPILOG,
                       description="Animate images warping smoothly from their original view into the congealed "
                                   "frame, optionally with an edit or label map painted on the average congealed "
                                   "image riding along. Unreadable files are reported and skipped.")
    p.add_argument("inputs", nargs="+", help="image folders (recursive), glob patterns or image files")
    p.add_argument("--out", required=True, help="output file: .gif, .mp4, .mov, .webm or .mkv")
    add_edit_args(p, splat_resolution=False)
    p.add_argument("--frames", type=int_range(2), default=48, help="frames from the original view to the congealed one")
    p.add_argument("--fps", type=positive_float, default=24.0, help="frame rate")
    p.add_argument("--boomerang", action="store_true",
                   help="play the warp forward then backward (2 * frames - 2 frames, loops seamlessly)")
    p.add_argument("--max-images", type=positive_int, default=16, help="use the first N readable images")
    p.add_argument("--nrow", type=positive_int, default=None, help="images per row of each frame (default: about square)")
    p.add_argument("--output-resolution", type=image_side, default=None,
                   help="side of each image in the animation (default: the model's flow size)")
    p.add_argument("--label-opacity", type=unit_float, default=0.6, help="opacity of the colour-coded label overlay")
    add_model_args(p, resolution=False)
    return p


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..data.images import iter_images, list_images, to_tensor
    from ..fileio import check_output_file
    from .align import load_congealer
    from .propagate import load_edit_arg

    skipped: list = []
    from ..apps.visualize import animate, save_animation

    edit = load_edit_arg(args)
    paths = list_images(args.inputs)
    out = check_output_file(args.out)
    if any(out.resolve() == Path(p).resolve() for p in paths):
        raise ValueError(f"{out} is one of the inputs; choose another output file")
    images = []
    for _, arr in iter_images(paths, "RGB", skipped=skipped):
        images.append(to_tensor(arr))
        if len(images) >= args.max_images:
            break
    if not images:
        raise ValueError("no readable images")
    congealer, _ = load_congealer(args)
    anim = animate(congealer, images, num_frames=args.frames, resolution=args.output_resolution, edit=edit,
                   blend=args.blend, kernel=args.kernel, sigma=args.sigma, opacity=args.opacity,
                   label_opacity=args.label_opacity, boomerang=args.boomerang, nrow=args.nrow)
    path = save_animation(anim.frames, out, fps=args.fps)
    for s in skipped:
        print(f"skipped {s.path}: {s.reason}")
    print(f"wrote {len(anim.frames)} frame(s) of {len(images)} image(s) to {path}")
    return 0
