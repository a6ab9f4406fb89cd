"""The ``gangealing`` command: one entry point, one subcommand per task.

The CLI only parses arguments and calls the library. Each subcommand is a module in
:mod:`gangealing.commands` with ``add_parser(subparsers) -> parser``, ``run(args) -> int`` and an
``ORDER`` number for the help listing; modules are discovered, so adding a command touches no
other file.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import List, Optional

from .commands._common import Formatter

EPILOG = """examples:
  gangealing convert cat.pt cat_gangealing.pt          # original GANgealing checkpoint -> ours
  gangealing convert stylegan2-ffhq.pt g.pt             # rosinality StyleGAN2 checkpoint -> ours
  gangealing convert network.pkl g.pt --trust-pickle    # NVlabs StyleGAN2-ADA pickle -> ours
  gangealing info g.pt                                  # what a checkpoint holds
"""


def command_modules() -> list:
    """The subcommand modules, in help order."""
    from . import commands

    mods = [importlib.import_module(f"{commands.__name__}.{m.name}")
            for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")]
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 50), m.__name__))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gangealing",
        description="GANgealing: GAN-supervised dense visual alignment (Peebles et al., CVPR 2022).",
        epilog=EPILOG,
        formatter_class=Formatter,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"gangealing {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in command_modules():
        mod.add_parser(sub).set_defaults(_run=mod.run)
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
    finally:
        _close_distributed()


def _close_distributed() -> None:
    """Tear down a torchrun process group a command opened, so processes exit cleanly."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
