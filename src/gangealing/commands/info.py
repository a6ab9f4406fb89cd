"""`gangealing info`: what a checkpoint holds."""
from __future__ import annotations

import argparse

from ._common import Formatter

ORDER = 91


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("info", help="print what a gangealing checkpoint holds", formatter_class=Formatter,
                       description="Print the kind, configs, step and metadata of a gangealing checkpoint.")
    p.add_argument("checkpoint", help="a gangealing checkpoint")
    return p


def run(args: argparse.Namespace) -> int:
    import json

    from ..checkpoint import load_checkpoint

    ckpt = load_checkpoint(args.checkpoint)
    n_params = {k: sum(v.numel() for v in sd.values()) for k, sd in ckpt.state.items()}
    print(json.dumps({"kind": ckpt.kind, "step": ckpt.step, "config": ckpt.config, "tensors": n_params,
                      "meta": ckpt.meta}, indent=2, default=str))
    return 0
