"""`gangealing convert`: import checkpoints from other formats."""
from __future__ import annotations

import argparse

from ._common import Formatter, non_negative_int

ORDER = 90


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "convert",
        help="import a checkpoint from another format (original GANgealing, rosinality StyleGAN2, NVlabs .pkl)",
        description="Convert a checkpoint into the gangealing format. The input format and the architecture are "
        "inferred from the file; the output loads with torch.load(weights_only=True).",
        formatter_class=Formatter,
    )
    p.add_argument("input", help="checkpoint to import (.pt / .pth / .pkl)")
    p.add_argument("output", help="where to write the gangealing checkpoint (written atomically; never the input)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow reading files that need arbitrary pickle code (NVlabs .pkl); only for files you trust")
    p.add_argument("--num-fp16-res", type=non_negative_int, default=None,
                   help="StyleGAN2-ADA normalisation on this many top resolutions (not visible in the weights; "
                   "default: read from the file's options, else 0)")
    p.add_argument("--inject", type=non_negative_int, default=None,
                   help="W+ layers taken from the congealing target (default: from the file's options)")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    return p


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..checkpoint import save_checkpoint
    from ..fileio import check_output_file
    from ..io import import_checkpoint

    src, dst = Path(args.input), Path(args.output)
    if dst.exists() and dst.resolve() == src.resolve():
        raise SystemExit("error: OUTPUT is the input file; inputs are never overwritten. Choose another path.")
    if dst.exists() and not args.overwrite:
        raise SystemExit(f"error: {dst} exists; pass --overwrite to replace it")
    check_output_file(dst)
    ckpt, what = import_checkpoint(src, trust_pickle=args.trust_pickle, num_fp16_res=args.num_fp16_res,
                                   inject=args.inject)
    save_checkpoint(ckpt, dst)
    print(f"read {what} from {src}")
    print(f"wrote {ckpt.kind} checkpoint ({', '.join(ckpt.state)}) to {dst}")
    return 0
