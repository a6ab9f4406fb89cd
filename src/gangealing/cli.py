"""The ``gangealing`` command: one entry point, one subcommand per task.

The CLI only parses arguments and calls the library; each subcommand lives in a function
``_cmd_<name>(args)`` registered in ``COMMANDS``.
"""
from __future__ import annotations

import argparse
import sys
from typing import Dict, List, Optional

EPILOG = """examples:
  gangealing convert cat.pt cat_gangealing.pt          # original GANgealing checkpoint -> ours
  gangealing convert stylegan2-ffhq.pt g.pt             # rosinality StyleGAN2 checkpoint -> ours
  gangealing convert network.pkl g.pt --trust-pickle    # NVlabs StyleGAN2-ADA pickle -> ours
  gangealing info g.pt                                  # what a checkpoint holds
"""


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults on every flag and keep the epilog's line breaks."""


def _add_convert(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "convert",
        help="import a checkpoint from another format (original GANgealing, rosinality StyleGAN2, NVlabs .pkl)",
        description="Convert a checkpoint into the gangealing format. The input format and the architecture are "
        "inferred from the file; the output loads with torch.load(weights_only=True).",
        formatter_class=_Formatter,
    )
    p.add_argument("input", help="checkpoint to import (.pt / .pth / .pkl)")
    p.add_argument("output", help="where to write the gangealing checkpoint (written atomically; never the input)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow reading files that need arbitrary pickle code (NVlabs .pkl); only for files you trust")
    p.add_argument("--num-fp16-res", type=int, default=None,
                   help="StyleGAN2-ADA normalisation on this many top resolutions (not visible in the weights; "
                   "default: read from the file's options, else 0)")
    p.add_argument("--inject", type=int, default=None,
                   help="W+ layers taken from the congealing target (default: from the file's options)")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    return p


def _cmd_convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .checkpoint import save_checkpoint
    from .io import import_checkpoint

    src, dst = Path(args.input), Path(args.output)
    if dst.exists() and dst.resolve() == src.resolve():
        raise SystemExit("error: OUTPUT is the input file; inputs are never overwritten. Choose another path.")
    if dst.exists() and not args.overwrite:
        raise SystemExit(f"error: {dst} exists; pass --overwrite to replace it")
    ckpt, what = import_checkpoint(src, trust_pickle=args.trust_pickle, num_fp16_res=args.num_fp16_res,
                                   inject=args.inject)
    save_checkpoint(ckpt, dst)
    print(f"read {what} from {src}")
    print(f"wrote {ckpt.kind} checkpoint ({', '.join(ckpt.state)}) to {dst}")
    return 0


def _add_info(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("info", help="print what a gangealing checkpoint holds", formatter_class=_Formatter,
                       description="Print the kind, configs, step and metadata of a gangealing checkpoint.")
    p.add_argument("checkpoint", help="a gangealing checkpoint")
    return p


def _cmd_info(args: argparse.Namespace) -> int:
    import json

    from .checkpoint import load_checkpoint

    ckpt = load_checkpoint(args.checkpoint)
    n_params = {k: sum(v.numel() for v in sd.values()) for k, sd in ckpt.state.items()}
    print(json.dumps({"kind": ckpt.kind, "step": ckpt.step, "config": ckpt.config, "tensors": n_params,
                      "meta": ckpt.meta}, indent=2, default=str))
    return 0


# name -> (add parser, run)
COMMANDS: Dict[str, tuple] = {
    "convert": (_add_convert, _cmd_convert),
    "info": (_add_info, _cmd_info),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gangealing",
        description="GANgealing: GAN-supervised dense visual alignment (Peebles et al., CVPR 2022).",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"gangealing {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add, run in COMMANDS.values():
        add(sub).set_defaults(_run=run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    from .checkpoint import CheckpointError

    try:
        return int(args._run(args) or 0)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
