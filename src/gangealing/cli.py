"""The ``gangealing`` command: one entry point, one subcommand per task.

The CLI only parses arguments and calls the library. Each subcommand is a module in
:mod:`gangealing.commands` with ``add_parser(subparsers) -> parser``, ``run(args) -> int`` and an
``ORDER`` number for the help listing; modules are discovered, so adding a command touches no
other file.

Errors the user can act on (the project's own, which are ``ValueError`` / ``OSError`` subclasses,
and ``ValueError``, ``OSError``, ``KeyError``, a missing optional extra, running out of memory) end the command with one
``error:`` line on stderr and exit status 1; ``--debug`` shows the traceback instead. Flags are
range-checked where they are parsed (:mod:`gangealing.commands._common`), exit status 2. Ctrl+C
prints ``interrupted`` (status 130).
"""
from __future__ import annotations

import argparse
import errno
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
DEBUG_HELP = "on failure, show the full Python traceback instead of a one-line error"


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
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in command_modules():
        p = mod.add_parser(sub)
        p.set_defaults(_run=mod.run)
        # Also accepted after the command; SUPPRESS keeps a --debug given before it.
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def error_message(e: BaseException, output: Optional[str] = None) -> str:
    """One line saying what went wrong, for an error a command let through (``output``: the
    command's output path, named when a full disk does not say which file it was writing)."""
    import torch

    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        where = e.filename or output or "the output device"
        return f"no space left on {where}; free some space (what was written before is intact) and rerun"
    if isinstance(e, OSError) and e.strerror and e.filename is not None:
        msg = f"{e.filename}: {e.strerror}"
    elif isinstance(e, KeyError):
        key = e.args[0] if e.args else None
        if isinstance(key, str) and " " in key.strip():  # raised with a message, not a bare key
            msg = key
        else:
            msg = f"missing entry {key!r} (rerun with --debug to see where)"
    elif isinstance(e, (MemoryError, torch.OutOfMemoryError)):
        msg = "out of memory; use a smaller --batch-size or output resolution"
    else:
        msg = str(e) or type(e).__name__
    return " ".join(msg.split())


def _user_errors() -> tuple:
    import torch

    # ImportError: an optional extra that is not installed (the message names the pip install).
    return (ValueError, OSError, KeyError, ImportError, MemoryError, torch.OutOfMemoryError)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except _user_errors() as e:
        if args.debug:
            raise
        print(f"error: {error_message(e, getattr(args, 'out', None))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130  # the shell's status for SIGINT
    finally:
        _close_distributed()


def _close_distributed() -> None:
    """Tear down a torchrun process group a command opened, so processes exit cleanly."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
