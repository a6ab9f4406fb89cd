"""The gangealing checkpoint format: one self-describing file, tensors and primitives only.

A checkpoint is a dict::

    {
      "format": "gangealing",          # marks our files
      "version": 1,
      "kind": "generator" | "model",   # a generator alone, or a GANgealing model
      "config": {"generator": {...}, "stn": {...}, "target": {...}, "classifier": {...}},
      "state":  {"generator": state_dict, "stn": state_dict, "target": state_dict, ...},
      "step": int,                      # training iterations done
      "meta": {...},                    # primitives: provenance, test-time settings, mean latent
      "checksum": {"sha256": "..."},    # of every tensor in "state", checked on load
    }

It loads with ``torch.load(path, weights_only=True)`` on any device and holds everything needed
to rebuild the modules (see :mod:`gangealing.build`). Files are written atomically (temporary
file in the same folder, then ``os.replace``) so a killed process never leaves half a checkpoint.
Files in other formats (rosinality StyleGAN2, original GANgealing, NVlabs pickles) come in through
the importers in :mod:`gangealing.io` (``gangealing convert IN OUT``). The checksum catches a file
damaged after it was written (a flipped byte would otherwise load and align silently); files
written before it existed have none and load as they are.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch

from .fileio import atomic_write

FORMAT = "gangealing"
VERSION = 1
KINDS = ("generator", "model")
PathLike = Union[str, os.PathLike]
# Primitive-valued options worth keeping for provenance (everything else is dropped).
_PRIMITIVES = (bool, int, float, str, type(None))
# What torch.load raises for files that are not (safe) torch checkpoints.
_LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, AttributeError, EOFError, zipfile.BadZipFile)


class CheckpointError(ValueError):
    """A file is not a checkpoint we can use; the message says what it is and what to do."""


@dataclass
class Checkpoint:
    """An in-memory checkpoint: configs (plain dicts), state dicts, the step and metadata."""

    kind: str
    config: Dict[str, Dict[str, Any]]
    state: Dict[str, Dict[str, torch.Tensor]]
    step: int = 0
    meta: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise CheckpointError(f"unknown checkpoint kind {self.kind!r}; expected one of {KINDS}")
        missing = [k for k in self.config if k not in self.state]
        if missing:
            raise CheckpointError(f"checkpoint has configs without weights for {missing}")

    def to_dict(self) -> Dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "kind": self.kind,
            "config": self.config,
            "state": self.state,
            "step": int(self.step),
            "meta": self.meta,
            "checksum": {"sha256": state_checksum(self.state)},
        }


def state_checksum(state: Mapping[str, Mapping[str, Any]]) -> str:
    """SHA-256 of a checkpoint's tensors: every module's entries in sorted order, each with its
    name, dtype, shape and bytes (so a renamed, reshaped or altered tensor changes it)."""
    h = hashlib.sha256()
    for name in sorted(state):
        for key in sorted(state[name]):
            value = state[name][key]
            if not isinstance(value, torch.Tensor):
                h.update(f"{name}.{key}={value!r};".encode())
                continue
            t = value.detach().cpu().contiguous()
            h.update(f"{name}.{key}:{t.dtype}:{tuple(t.shape)};".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def atomic_save(obj: Any, path: PathLike) -> Path:
    """``torch.save`` to ``path`` atomically: a reader sees the old file or the new one, never half."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def save_checkpoint(ckpt: Checkpoint, path: PathLike) -> Path:
    """Write ``ckpt`` to ``path`` atomically (tensors are moved to CPU first)."""
    d = ckpt.to_dict()
    d["state"] = {name: {k: v.detach().cpu() for k, v in sd.items()} for name, sd in d["state"].items()}
    return atomic_save(d, path)


def describe_foreign(obj: Any) -> str:
    """A short human description of what a loaded object that is not ours looks like."""
    if not isinstance(obj, Mapping):
        return f"a pickled {type(obj).__name__}, not a dict"
    keys = set(obj)
    if {"g_ema", "t_ema", "ll"} <= keys:
        extra = " with a cluster classifier" if "classifier" in keys else ""
        return f"an original GANgealing checkpoint{extra}"
    if "g_ema" in keys:
        return "a rosinality / original GANgealing StyleGAN2 checkpoint (g_ema)"
    if any(isinstance(k, str) and k.startswith("style.") for k in keys):
        return "a bare StyleGAN2 generator state dict (rosinality layout)"
    if any(isinstance(k, str) and k.startswith("stns.") for k in keys):
        return "a bare spatial-transformer state dict"
    shown = ", ".join(sorted(map(str, keys))[:8])
    return f"a dict with keys [{shown}{', ...' if len(keys) > 8 else ''}]"


# First bytes of files people pass by mistake, to say what a file is instead.
_MAGIC = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
          (b"%PDF", "a PDF document"), (b"\x1f\x8b", "a gzip archive"), (b"{", "a JSON / text file"))


def _first_line(e: BaseException) -> str:
    lines = str(e).splitlines()
    return lines[0] if lines else type(e).__name__


def not_a_checkpoint(path: Path, error: Optional[BaseException] = None) -> Optional[str]:
    """Why ``path`` cannot be a torch checkpoint at all (empty, truncated, another kind of file), or
    None when it is a well-formed torch file (that may need code to unpickle). ``error``: what
    ``torch.load`` raised, if it was tried."""
    size = path.stat().st_size
    if size == 0:
        return "is empty (0 bytes), not a checkpoint"
    with open(path, "rb") as f:
        head = f.read(8)
    truncated = f"is truncated or corrupt ({size} bytes); copy or download it again"
    if head.startswith(b"PK\x03\x04"):  # torch's zip format
        if not zipfile.is_zipfile(path) or isinstance(error, (RuntimeError, zipfile.BadZipFile, EOFError)):
            return truncated
        return None
    if head[:1] == b"\x80":  # a pickle: torch's legacy format
        return truncated if isinstance(error, EOFError) else None
    kind = next((what for magic, what in _MAGIC if head.startswith(magic)), "an unknown kind of file")
    return f"is not a checkpoint: it looks like {kind}"


def _torch_load(path: Path, map_location: Any) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except _LOAD_ERRORS as e:
        why = not_a_checkpoint(path, e)
        if why:
            raise CheckpointError(f"{path}: {why}") from e
        msg = _first_line(e)
        hint = ""
        if "Namespace" in str(e):
            hint = (" It holds an argparse Namespace, as original GANgealing and rosinality checkpoints do:"
                    f" convert it once with `gangealing convert {path} OUT.pt`.")
        elif path.suffix == ".pkl":
            hint = (" This looks like an NVlabs StyleGAN2-ADA pickle, which runs code when loaded: convert it with"
                    f" `gangealing convert {path} OUT.pt --trust-pickle` if you trust its source.")
        raise CheckpointError(f"{path}: cannot be loaded safely (weights_only=True): {msg}.{hint}") from e


def load_checkpoint(path: PathLike, map_location: Any = "cpu") -> Checkpoint:
    """Load one of our checkpoints with ``weights_only=True``.

    Raises :class:`CheckpointError` with one clear message for a missing file, a file in another
    format (saying which, and the ``gangealing convert`` command that imports it), or a newer
    format version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    obj = _torch_load(path, map_location)
    if not isinstance(obj, Mapping) or obj.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: this is {describe_foreign(obj)}, not a gangealing checkpoint "
            f"(expected a dict with format='{FORMAT}'). Import it with `gangealing convert {path} OUT.pt`."
        )
    version = obj.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version!r} is newer than this gangealing "
                              f"understands ({VERSION}); upgrade gangealing.")
    try:
        ckpt = Checkpoint(kind=obj["kind"], config=dict(obj["config"]), state=dict(obj["state"]),
                          step=int(obj.get("step", 0)), meta=dict(obj.get("meta", {})))
    except KeyError as e:
        raise CheckpointError(f"{path}: gangealing checkpoint is missing its {e.args[0]!r} entry (truncated or hand-edited?)") from e
    expected = (obj.get("checksum") or {}).get("sha256")
    if expected is not None and expected != state_checksum(ckpt.state):
        raise CheckpointError(f"{path}: its tensors do not match the checksum written with them: the file was damaged "
                              "or altered after it was saved; copy, download or convert it again")
    return ckpt


def read_any(path: PathLike, map_location: Any = "cpu", trust_pickle: bool = False) -> Any:
    """Read a file of any supported format into Python objects (used by importers).

    Tries ``weights_only=True`` first. Original GANgealing and rosinality checkpoints hold an
    ``argparse.Namespace`` of their training options; that class is data only, so it is allowed
    explicitly. Anything else that needs arbitrary code requires ``trust_pickle=True``.
    """
    import argparse

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location=map_location, weights_only=True)
    except _LOAD_ERRORS as e:
        why = not_a_checkpoint(path, e)
        if why:
            raise CheckpointError(f"{path}: {why}") from e
        if not trust_pickle:
            raise CheckpointError(
                f"{path}: cannot be read without running code from the file ({_first_line(e)}). "
                "Pass --trust-pickle (Python: trust_pickle=True) only if you trust where it came from."
            ) from e
    return torch.load(path, map_location=map_location, weights_only=False)


def args_to_dict(args: Any) -> Dict[str, Any]:
    """The primitive-valued options of an argparse Namespace (or dict), for provenance."""
    import argparse

    d = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
    out = {}
    for k, v in d.items():
        if isinstance(v, _PRIMITIVES):
            out[k] = v
        elif isinstance(v, (list, tuple)) and all(isinstance(x, _PRIMITIVES) for x in v):
            out[k] = list(v)
    return out


