"""`gangealing export`: the spatial transformer as an ONNX graph (and the template edit beside it)."""
from __future__ import annotations

import argparse
import sys

from ._common import Formatter
from .align import add_test_settings

ORDER = 37

EPILOG = """examples:
  gangealing export models/gangealing-tiny-cat/model.pt cat.onnx
  gangealing export cat cat256.onnx --input-size 256 --edit cat_edit.png
  gangealing align photos/ --ckpt cat.onnx --out aligned/          # run the export with onnxruntime

writes (see docs/video.md, "Real time"):
  OUT.onnx            the graph: image (1, C, S, S) -> grid (1, F, F, 2), matrix, flow, flipped, cluster
  OUT.onnx.json       what a runtime needs: sizes, padding, flip, clusters, the outputs
  OUT.onnx.edit.png   the template edit (with --edit): RGBA on the congealed frame
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("export", help="export the spatial transformer to ONNX (for onnxruntime)",
                       formatter_class=Formatter, epilog=EPILOG,
                       description="Export a model's spatial transformer (similarity and flow, every head, the "
                                   "cluster classifier, flip inference where the model uses it) to an ONNX graph at "
                                   "one input size, for onnxruntime (the 'onnx' extra: pip install "
                                   "'gangealing[onnx]'). The grids it returns equal PyTorch's to 1e-4.")
    p.add_argument("model", help="model checkpoint: our file, an original GANgealing .pt, or a released name")
    p.add_argument("out", help="the .onnx file to write (side files OUT.json and OUT.edit.png go beside it)")
    add_test_settings(p)
    p.add_argument("--edit", default=None, help="RGBA edit painted on the average congealed image, written beside the graph")
    return p


def run(args: argparse.Namespace) -> int:
    from ..export import export_onnx, onnx_available
    from ..predictor import Congealer

    if not str(args.out).lower().endswith(".onnx"):
        print(f"error: {args.out}: the output must end in .onnx", file=sys.stderr)
        return 2
    if not onnx_available():
        print("error: exporting needs onnx and onnxruntime: pip install 'gangealing[onnx]'", file=sys.stderr)
        return 2
    edit = None
    if args.edit:
        from ..data.edits import read_edit

        edit = read_edit(args.edit)
    congealer = Congealer.from_checkpoint(args.model, device="cpu", iters=args.iters, padding_mode=args.padding_mode,
                                          flip=args.flip, input_size=args.input_size)
    summary = export_onnx(congealer, args.out, edit=edit, source=str(args.model))
    extra = f", {summary.edit}" if summary.edit else ""
    print(f"exported the transformer ({congealer.input_size} px input, flow {congealer.flow_size}, "
          f"{congealer.num_clusters} cluster(s), flip {'on' if congealer.flip else 'off'}) to {summary.onnx} "
          f"({summary.bytes / 1e6:.1f} MB); side file {summary.info}{extra}")
    return 0
