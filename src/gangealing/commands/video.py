"""`gangealing video`: an edit and correspondences carried to every frame of a video or a frames folder."""
from __future__ import annotations

import argparse
import sys

from ._common import Formatter, float_range, image_side, int_range, positive_float, unit_float

ORDER = 36

EPILOG = """examples:
  gangealing video clip.mp4 --ckpt cat --edit cat_edit.png --out clip_edited/
  gangealing video frames/ --ckpt model.pt --labels parts.png --fps 30 --out parts_video/
  gangealing video clip.mp4 --ckpt cat --points points.json --out tracks/      # correspondences only
  gangealing video clip.mp4 --ckpt cat --dense-points 32 --congealed --out tracks/
  torchrun --nproc_per_node 4 -m gangealing video long.mp4 --ckpt cat --edit e.png --out out/

points JSON: [[x, y], ...] (or {"points": [...]}) in pixels of the congealed frame (--points-size, default
the model's flow size), pixel centres at integers; .npy (P, 2) works too.

outputs (see docs/video.md):
  out/propagated.mp4        the edited video            out/congealed.mp4   with --congealed
  out/correspondences.npy   (frames, points, 2) float32 (x, y) pixels of each frame
  out/video.json            frame count, size, fps, source frame of each output frame, skipped frames
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from .align import add_model_args
    from .propagate import add_edit_args

    p = sub.add_parser("video", help="carry an edit / points to every frame of a video",
                       formatter_class=Formatter, epilog=EPILOG,
                       description="Align every frame of a video file (mp4, mov, webm, mkv) or a folder of frames, "
                                   "composite an edit (or label map) painted on the average congealed image, and "
                                   "write the edited video and, on request, per-frame correspondences of points given "
                                   "on the congealed frame. Needs PyAV (pip install 'gangealing[video]'). Unreadable "
                                   "frames of a folder are reported and skipped. Runs under torchrun (each process "
                                   "takes a contiguous chunk of frames).")
    p.add_argument("input", nargs="+", help="a video file, or a folder / glob / list of frame images (sorted by name)")
    p.add_argument("--out", required=True, help="output folder (must not be inside an input folder)")
    add_edit_args(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--points", default=None, help="congealed-frame points (JSON or .npy) to track through the video")
    g.add_argument("--dense-points", type=int_range(1, 1024), default=None, metavar="S",
                   help="track every pixel centre of an S x S congealed frame (S*S points)")
    p.add_argument("--points-size", type=image_side, default=None,
                   help="side of the congealed frame --points are given in (default: the model's flow size)")
    p.add_argument("--congealed", action="store_true", help="also write the congealed video")
    p.add_argument("--smooth", type=float_range(0.0, 1.0), default=0.0, metavar="A",
                   help="temporal smoothing of the warp: each frame's grid becomes A * previous + (1 - A) * its own "
                        "(0: off, every frame on its own; e.g. 0.6 calms jitter on real video); A < 1")
    p.add_argument("--label-opacity", type=unit_float, default=0.5, help="opacity of the colour-coded label overlay")
    p.add_argument("--fps", type=positive_float, default=None, help="output frame rate (default: the input video's, else 30)")
    p.add_argument("--format", choices=("mp4", "mov", "webm", "mkv", "gif"), default="mp4",
                   help="container of the written videos")
    add_model_args(p, resolution=False, backend=True)
    return p


def run(args: argparse.Namespace) -> int:
    from ..distributed import is_main
    from .align import load_congealer
    from .propagate import edit_style, load_edit_arg

    if not (args.edit or args.labels or args.points or args.dense_points or args.congealed):
        print("error: nothing to do: give --edit, --labels, --points, --dense-points and/or --congealed", file=sys.stderr)
        return 2
    from ..apps.video import dense_points, load_points, process_video

    edit = load_edit_arg(args)
    points, points_size = None, args.points_size
    if args.points:
        points = load_points(args.points)
    elif args.dense_points:
        points, points_size = dense_points(args.dense_points), args.dense_points
    congealer, dist = load_congealer(args)
    source = args.input[0] if len(args.input) == 1 else args.input
    summary = process_video(congealer, source, args.out, edit=edit, style=edit_style(args), points=points,
                            points_size=points_size, congealed=args.congealed, batch_size=args.batch_size,
                            fps=args.fps, video_format=args.format, dist=dist, smooth=args.smooth)
    if is_main(dist):
        for s in summary.skipped:
            print(f"skipped frame {s.index} ({s.path}): {s.reason}")
        h, w = summary.size
        print(f"processed {summary.num_frames} frame(s) "
              f"({w}x{h}, {summary.fps:g} fps): " + ", ".join(f"{k} {v}" for k, v in summary.outputs.items()))
    return 0
