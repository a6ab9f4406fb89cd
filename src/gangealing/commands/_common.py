"""Shared pieces of the subcommands: the help formatter and range-checked argument types.

The types reject a bad value where it is parsed, so the user sees one ``usage`` line naming the
flag (exit status 2) instead of a failure deep inside a command::

    p.add_argument("--batch-size", type=positive_int, default=16, ...)
    p.add_argument("--fraction", type=float_range(0.0, 1.0, low_open=True), default=1.0, ...)
"""
from __future__ import annotations

import argparse
import math
from typing import Callable, List, Optional

# The largest image side the applications produce: one 4096^2 grid is already 128 MiB per image.
MAX_RESOLUTION = 4096


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults on every flag and keep description / epilog line breaks."""


def _bounds(low, high, low_open: bool = False) -> str:
    lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
    hi = "" if high is None else f"<= {high}"
    return " and ".join(s for s in (lo, hi) if s)


def int_range(low: Optional[int] = None, high: Optional[int] = None, hint: str = "") -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``[low, high]`` (either bound optional)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is out of range: must be {_bounds(low, high)}{hint}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def float_range(low: Optional[float] = None, high: Optional[float] = None, *, low_open: bool = False,
                hint: str = "") -> Callable[[str], float]:
    """An argparse ``type``: a finite number in ``[low, high]`` (``(low, high]`` with ``low_open``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        below = low is not None and (value <= low if low_open else value < low)
        if below or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value:g} is out of range: must be {_bounds(low, high, low_open)}{hint}")
        return value

    parse.__name__ = "number"
    return parse


positive_int = int_range(1)
non_negative_int = int_range(0)
image_side = int_range(1, MAX_RESOLUTION, hint=" (pixels on a side)")
port = int_range(0, 65535, hint=" (0: any free port)")
finite_float = float_range()
positive_float = float_range(0.0, low_open=True)
non_negative_float = float_range(0.0)
unit_float = float_range(0.0, 1.0)


def index_list(text: str) -> List[int]:
    """An argparse ``type``: comma-separated indices ``0,2,1`` -> ``[0, 2, 1]``."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of indices like 1,0,2") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: indices must be >= 0")
    return values


def device(text: str) -> str:
    """An argparse ``type``: a torch device that exists on this machine (cpu, cuda, cuda:1, mps)."""
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}: use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(f"{text}: this machine has no CUDA device; use --device cpu")
        if dev.index is not None and dev.index >= count:
            raise argparse.ArgumentTypeError(f"{text}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text}: MPS is not available on this machine; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"unsupported device {text!r}: use cpu, cuda or cuda:N")
    return text


def new_model_file(out, source: Optional[str], overwrite: bool, source_flag: str = "the input model"):
    """``out`` as the path of a model file to write: never the ``source`` model file, an existing file
    only with ``overwrite``; a ``ValueError`` naming the fix otherwise."""
    from ..fileio import check_not_input, check_output_file

    out = check_not_input(out, source, source_flag)
    if out.exists() and not overwrite:
        raise ValueError(f"{out} exists; pass --overwrite to replace it, or choose another --out")
    return check_output_file(out)
