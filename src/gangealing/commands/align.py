"""`gangealing align`: congeal a folder of images; write congealed images, grids, flips, clusters, the average."""
from __future__ import annotations

import argparse

from ._common import Formatter, device, image_side, non_negative_int, positive_int

ORDER = 30

EPILOG = """examples:
  gangealing align photos/ --ckpt cat --out aligned/
  gangealing align "photos/*.jpg" extra.png --ckpt model.pt --out aligned/ --output-resolution 256
  torchrun --nproc_per_node 4 -m gangealing align photos/ --ckpt cat --out aligned/

outputs (see docs/align.md):
  aligned/congealed/000000_<name>.png   congealed images, input order
  aligned/grids/000000_<name>.npy       (R, R, 2) float32: where each output pixel comes from in the input
  aligned/results.csv, results.json     input, outputs, flipped, cluster per image (and unreadable files)
  aligned/average.png                   the average congealed image
"""


def add_test_settings(p: argparse.ArgumentParser, input_size_default: str = "the size the model was trained at") -> None:
    """The transformer's test-time settings: --iters, --padding-mode, --flip, --input-size (also `gangealing export`'s)."""
    from ..geometry.warp import PADDING_MODES

    p.add_argument("--iters", type=positive_int, default=None,
                   help="similarity passes (default: the checkpoint's test setting, else 1)")
    # --padding-mode, as `train` spells it; --padding (the earlier spelling) stays an alias.
    p.add_argument("--padding-mode", "--padding", dest="padding_mode", choices=PADDING_MODES, default=None,
                   help="how pixels outside the image are filled (default: the checkpoint's setting, else border)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="flip inference: align each image or its mirror, whichever has the smoother flow "
                        "(default: on for single-cluster models with a flow; clustering models flip by classifier)")
    p.add_argument("--input-size", type=image_side, default=None,
                   help="side the transformer is fed at, a multiple of its flow size (the original's --real_size; "
                        f"default: {input_size_default})")


def add_routing_args(p: argparse.ArgumentParser) -> None:
    """How a clustering model picks each image's cluster: --route, --route-loss."""
    from ..losses.perceptual import PERCEPTUAL_LOSSES
    from ..routing import ROUTINGS

    p.add_argument("--route", choices=ROUTINGS, default=None,
                   help="clustering models: route each image with the cluster classifier (the original's), or to the "
                        "head whose congealed image is nearest that head's GAN target, as training assigns samples "
                        "(no classifier needed; K transformer passes per image; needs the generator in the checkpoint). "
                        "Default: the checkpoint's test setting, else the classifier when it has one, else targets")
    p.add_argument("--route-loss", choices=PERCEPTUAL_LOSSES, default=None,
                   help="distance of --route targets (default: the loss the model was trained with)")


def add_model_args(p: argparse.ArgumentParser, *, resolution: bool = True,
                   input_size_default: str = "the size the model was trained at", backend: bool = False) -> None:
    """Flags shared by the commands that apply a trained model to real images."""
    p.add_argument("--ckpt", required=True,
                   help="model checkpoint: our file, an original GANgealing .pt, or a released name "
                        "(bicycle, car, cat, cat_ssl_mix6, celeba, cub, dog, horse, tvmonitor)")
    if resolution:
        p.add_argument("--output-resolution", type=image_side, default=None,
                       help="side of the congealed images (default: the model's flow size)")
    add_test_settings(p, input_size_default)
    p.add_argument("--batch-size", type=positive_int, default=16, help="images per forward pass (per process)")
    p.add_argument("--device", type=device, default=None,
                   help="cpu, cuda, cuda:1 (default: this process's GPU if there is one, else cpu)")
    add_routing_args(p)
    if backend:
        p.add_argument("--backend", choices=("torch", "onnx", "auto"), default="torch",
                       help="run the transformer with PyTorch, or export it and run it with onnxruntime (the 'onnx' "
                            "extra; CPU; a --ckpt ending in .onnx is an export and always runs so); auto: onnxruntime "
                            "on the CPU when installed (the transformer alone measured 3-6x faster there, docs/video.md), "
                            "else PyTorch")


def load_congealer(args: argparse.Namespace):
    """(Congealer, DistInfo) from the shared flags; starts the process group under torchrun."""
    from ..distributed import init_distributed
    from ..predictor import Congealer

    dist = init_distributed(args.device)
    device = getattr(dist, "device", None) or args.device or "cpu"
    backend = getattr(args, "backend", "torch")
    routing = getattr(args, "route", None)
    if routing == "targets":
        if backend == "onnx" or str(args.ckpt).lower().endswith(".onnx"):
            raise ValueError("--route targets needs the generator and runs with PyTorch; use the model checkpoint "
                             "with --backend torch (or route with the classifier)")
        backend = "torch"
    if backend != "torch" or str(args.ckpt).lower().endswith(".onnx"):
        from ..export import load_backend

        congealer = load_backend(args, device, backend)
        if congealer is not None:
            return congealer, dist
    congealer = Congealer.from_checkpoint(args.ckpt, device=device, iters=args.iters, padding_mode=args.padding_mode,
                                          flip=args.flip, output_resolution=getattr(args, "output_resolution", None),
                                          input_size=args.input_size, routing=routing,
                                          route_loss=getattr(args, "route_loss", None))
    return congealer, dist


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("align", help="congeal images: aligned images, sampling grids, flips, clusters, average",
                       formatter_class=Formatter, epilog=EPILOG,
                       description="Align every image of a folder, glob or file list with a trained model. "
                                   "Unreadable files are reported and skipped; inputs are never modified. "
                                   "Runs under torchrun (the images are split across processes).")
    p.add_argument("inputs", nargs="+", help="image folders (recursive), glob patterns or image files")
    p.add_argument("--out", required=True, help="output folder: new or empty, and not inside an input folder")
    p.add_argument("--overwrite", action="store_true",
                   help="reuse a non-empty --out: first remove the outputs of a previous align there (other files stay)")
    add_model_args(p, backend=True)
    p.add_argument("--cluster", type=non_negative_int, default=None,
                   help="clustering models: align every image in this cluster instead of asking the classifier")
    p.add_argument("--average-count", type=non_negative_int, default=None,
                   help="average the congealed images of the first N inputs (default: all)")
    p.add_argument("--grids", choices=("normalized", "pixels", "none"), default="normalized",
                   help="save each image's sampling grid: normalised coordinates (align_corners=False), "
                        "input pixels, or not at all")
    p.add_argument("--format", choices=("png", "jpg"), default="png", help="image format of the outputs")
    return p


def run(args: argparse.Namespace) -> int:
    from ..apps.align import align_images, ignored_files
    from ..distributed import finish, is_main

    congealer, dist = load_congealer(args)
    summary = align_images(congealer, args.inputs, args.out, output_resolution=args.output_resolution,
                           batch_size=args.batch_size, save_grids=args.grids != "none",
                           grid_units="normalized" if args.grids == "none" else args.grids,
                           average_count=args.average_count, image_format=args.format, cluster=args.cluster,
                           dist=dist, overwrite=args.overwrite)
    if is_main(dist):
        ignored = ignored_files(args.inputs)
        if ignored:
            print(f"ignored {len(ignored)} non-image file(s) in the input folders, e.g. {ignored[0]}")
        for s in summary.skipped:
            print(f"skipped {s['path']}: {s['reason']}")
        print(f"aligned {summary.num_written} image(s) into {summary.out_dir}"
              + (f"; {len(summary.skipped)} unreadable skipped" if summary.skipped else "")
              + (f"; average: {', '.join(summary.averages)}" if summary.averages else ""))
    finish(dist)
    return 0
