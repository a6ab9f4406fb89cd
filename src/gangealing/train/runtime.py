"""What every trainer shares: processes and devices, the run folder, checkpoints, logging, progress.

* :func:`init_distributed` reads the ``torchrun`` environment (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``) and starts the process group: NCCL on CUDA, gloo on CPU. Without ``torchrun`` it
  is a single process and nothing is initialised.
* :class:`RunDir` is the run folder: ``config.json`` (the resolved config), ``checkpoints/``
  (``NNNNNNN.pt`` numbered by step, plus ``last.pt``; the newest ``keep`` numbered ones are kept),
  and what the trainer writes beside them (``metrics.jsonl``, sample grids). A trainer resumes by
  calling :meth:`RunDir.latest_checkpoint`; no flag is needed. :meth:`RunDir.acquire` locks the
  folder for one training at a time and sweeps the temporary files of writes a kill interrupted.
* :class:`MetricsLogger` appends JSON lines (one dict per logged step) and mirrors scalars to
  TensorBoard when ``tensorboard`` is installed; given the step a run resumed from, it first drops
  the lines of the steps that were lost.
* :class:`StopOnSignal` turns SIGINT/SIGTERM into a flag that the training loop checks after each
  step (:func:`any_process` makes all processes agree), so a stopped run saves a checkpoint first.
* :func:`progress` is a tqdm bar (rate and ETA) on the primary process only.
* :func:`ema_update` and :func:`seed_everything` are the small pieces every GAN trainer needs.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import re
import shutil
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Dict, IO, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..checkpoint import Checkpoint, atomic_save, save_checkpoint
from ..distributed import (DistInfo, all_reduce_dict, all_reduce_grads, all_reduce_mean, any_process,  # noqa: F401
                           barrier, broadcast_module, cleanup_distributed, init_distributed, pick_device)
from ..fileio import atomic_write

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows: runs there are not locked
    fcntl = None

PathLike = Union[str, os.PathLike]


# --------------------------------------------------------------------------------- processes
# DistInfo, init_distributed, barrier, the all-reduces: gangealing.distributed (imported above).
def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel (or compiled) wrapper."""
    while hasattr(module, "module") and isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        module = module.module
    return getattr(module, "_orig_mod", module)


# --------------------------------------------------------------------------------- randomness
def seed_everything(seed: int, rank: int = 0, device: Union[str, torch.device] = "cpu") -> torch.Generator:
    """Seed Python, numpy and torch with ``seed + rank``; return a ``torch.Generator`` on ``device`` seeded the same.

    Each process gets different noise (different rank) from one user-facing seed.
    """
    s = int(seed) + int(rank)
    random.seed(s)
    try:
        import numpy as np

        np.random.seed(s % 2**32)
    except ImportError:  # pragma: no cover
        pass
    torch.manual_seed(s)
    g = torch.Generator(device=device)
    g.manual_seed(s)
    return g


@torch.no_grad()
def ema_update(ema_module: nn.Module, module: nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * module`` for floating parameters; buffers are copied."""
    module = unwrap(module)
    ema_p = dict(ema_module.named_parameters())
    for name, p in module.named_parameters():
        e = ema_p[name]
        e.lerp_(p.detach().to(e.dtype), 1.0 - decay)
    ema_b = dict(ema_module.named_buffers())
    for name, b in module.named_buffers():
        ema_b[name].copy_(b)


# --------------------------------------------------------------------------------- run folder
_CKPT_RE = re.compile(r"^(\d{7,})\.pt$")


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def write_json(obj: Any, path: PathLike) -> Path:
    """Write ``obj`` (dataclasses allowed) as indented JSON, atomically."""
    def write(f):
        json.dump(_jsonable(obj), f, indent=2)
        f.write("\n")

    return atomic_write(path, write, binary=False)


class RunInUseError(ValueError):
    """Another training holds the run folder's lock."""


class RunDir:
    """A run folder: ``config.json``, ``checkpoints/NNNNNNN.pt`` + ``checkpoints/last.pt``, logs, samples.

    Only the primary process should write (pass ``is_primary``; writes are no-ops elsewhere).
    A trainer holds the folder with :meth:`acquire` (or ``with run:``) from before it reads the
    latest checkpoint until it stops, so that a second training in the same folder is refused
    instead of interleaving its checkpoints with the first one's.
    """

    LOCK = ".lock"

    def __init__(self, path: PathLike, keep: int = 3, is_primary: bool = True):
        self.path = Path(path)
        self.keep = int(keep)
        self.is_primary = is_primary
        self._lock: Optional[IO[str]] = None
        if is_primary:
            self.checkpoints.mkdir(parents=True, exist_ok=True)

    # -- one training at a time
    @property
    def locked(self) -> bool:
        """Whether this object holds the folder's lock."""
        return self._lock is not None

    def acquire(self) -> "RunDir":
        """Lock the folder for this training (primary only; again while held: no-op), then sweep the
        temporary files that writes killed mid-way left behind (:meth:`sweep_tmp`).

        The lock is ``flock`` on ``RUN/.lock``: the operating system drops it when the process
        ends, however it ends, so a killed run never leaves a stale lock. Raises
        :class:`RunInUseError` when another training (another process, or another :class:`RunDir`
        of this process) holds it.
        """
        if not self.is_primary or self._lock is not None:
            return self
        self.path.mkdir(parents=True, exist_ok=True)
        f = open(self.path / self.LOCK, "a+")
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                owner = f.read().strip()
                f.close()
                who = f" (process {owner})" if owner.isdigit() else ""
                raise RunInUseError(f"{self.path} is in use by another training{who}; wait for it to finish, "
                                    "stop it, or choose another --out") from None
            except OSError as e:  # a file system without locks (some network mounts): train unprotected
                warnings.warn(f"cannot lock {f.name} ({e.strerror}); nothing stops a second training in "
                              f"{self.path}", stacklevel=2)
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._lock = f
        self.sweep_tmp()
        return self

    def release(self) -> None:
        """Give the lock back (the ``.lock`` file stays: removing it would race with a waiting run)."""
        if self._lock is not None:
            self._lock.close()  # closing the file drops the flock
            self._lock = None

    def __enter__(self) -> "RunDir":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def sweep_tmp(self) -> List[Path]:
        """Remove ``.NAME.*.tmp`` files (atomic writes that a kill interrupted) from the run folder
        and its direct subfolders, except nested run folders (e.g. ``classifier/``), which their
        own training sweeps. Only call it while holding the lock. Returns what was removed."""
        if not self.is_primary or not self.path.is_dir():
            return []
        folders = [self.path] + [d for d in self.path.iterdir() if d.is_dir() and not (d / self.LOCK).exists()]
        removed = []
        for folder in folders:
            for tmp in folder.glob(".*.tmp"):
                if tmp.is_file():
                    tmp.unlink(missing_ok=True)
                    removed.append(tmp)
        return removed

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    def file(self, *parts: str) -> Path:
        """A path inside the run folder (parent folders created on the primary)."""
        p = self.path.joinpath(*parts)
        if self.is_primary:
            p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def save_config(self, config: Any) -> Optional[Path]:
        """Write the resolved config (a dataclass or dict) to ``config.json``."""
        return write_json(config, self.config_path) if self.is_primary else None

    def load_config(self) -> Optional[Dict[str, Any]]:
        """The saved ``config.json`` as a dict, or None."""
        if not self.config_path.is_file():
            return None
        with open(self.config_path) as f:
            return json.load(f)

    def numbered_checkpoints(self) -> List[Path]:
        """``checkpoints/NNNNNNN.pt`` sorted by step."""
        if not self.checkpoints.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.checkpoints.iterdir() if (m := _CKPT_RE.match(p.name))]
        return [p for _, p in sorted(found)]

    def latest_checkpoint(self) -> Optional[Path]:
        """``last.pt`` if present, else the highest-numbered checkpoint, else None."""
        last = self.checkpoints / "last.pt"
        if last.is_file():
            return last
        numbered = self.numbered_checkpoints()
        return numbered[-1] if numbered else None

    def save_checkpoint(self, ckpt: Union[Checkpoint, Mapping[str, Any]], step: int,
                        numbered: bool = True) -> Optional[Path]:
        """Write ``last.pt`` (and ``NNNNNNN.pt`` if ``numbered``) atomically; prune to the newest ``keep``.

        ``ckpt``: a :class:`~gangealing.checkpoint.Checkpoint` (written in our format) or a plain dict.
        """
        if not self.is_primary:
            return None
        if isinstance(ckpt, Checkpoint):
            def write(p): return save_checkpoint(ckpt, p)
        else:
            def write(p): return atomic_save(dict(ckpt), p)
        last = write(self.checkpoints / "last.pt")
        if numbered:
            write(self.checkpoints / f"{int(step):07d}.pt")
            for old in self.numbered_checkpoints()[:-self.keep] if self.keep > 0 else []:
                old.unlink(missing_ok=True)
        return last

    def pin_checkpoint(self, path: PathLike, step: int) -> Optional[Path]:
        """Keep ``path`` (the checkpoint a run resumes from) as ``checkpoints/branch-NNNNNNN.pt``, out of
        the pruning of :meth:`save_checkpoint`: a run continued with other settings can still be
        branched again from where its settings changed (hard link where the file system allows, else
        an atomic copy). Returns the pinned path (None off the primary)."""
        if not self.is_primary:
            return None
        dst = self.checkpoints / f"branch-{int(step):07d}.pt"
        if dst.exists():
            return dst
        try:
            os.link(path, dst)
        except OSError:  # no hard links here (another device, some network file systems): copy
            with open(path, "rb") as src:  # streamed: a paper-size checkpoint need not fit in memory
                atomic_write(dst, lambda f: shutil.copyfileobj(src, f))
        return dst


def check_resume_settings(saved: Any, cfg: Any, resumable: Sequence[str], changeable: Sequence[str] = (),
                          change_settings: bool = False, where: str = "this run") -> Dict[str, Tuple[Any, Any]]:
    """Compare the config ``cfg`` of a run about to resume with the ``saved`` one (dataclasses of one
    type); return the changes ``{name: (old, new)}``.

    Fields in ``resumable`` (those that do not change what is learned: iterations, intervals) may
    change; those in ``changeable`` only with ``change_settings`` (the user's explicit flag); any
    other change raises ValueError naming each field with its old and new value.
    """
    changes = {f.name: (getattr(saved, f.name), getattr(cfg, f.name)) for f in dataclasses.fields(cfg)
               if getattr(saved, f.name) != getattr(cfg, f.name)}

    def listed(names: List[str]) -> str:
        return ", ".join(f"{k} {changes[k][0]!r} -> {changes[k][1]!r}" for k in names)

    fixed = [k for k in changes if k not in tuple(resumable) + tuple(changeable)]
    if fixed:
        raise ValueError(f"{where} was started with other settings, which cannot change on resume ({listed(fixed)}); "
                         "rerun without these flags to continue it, or choose another --out for a new run")
    asked = [k for k in changes if k in changeable]
    if asked and not change_settings:
        raise ValueError(f"{where} was started with other settings ({listed(asked)}); rerun without these flags "
                         "to continue it with its own, add --change-settings to continue with the new ones, "
                         "or choose another --out")
    return changes


# --------------------------------------------------------------------------------- logging
def drop_metrics_after(path: PathLike, step: int) -> int:
    """Remove the lines of steps after ``step`` (and lines cut by a kill) from a ``metrics.jsonl``,
    atomically; returns how many lines went. A run resumed from the checkpoint of ``step`` redoes
    the later steps, and their old lines describe weights that no longer exist."""
    p = Path(path)
    if not p.is_file():
        return 0
    keep, dropped = [], 0
    with open(p) as f:
        for line in f:
            try:
                row_step = int(json.loads(line).get("step", -1)) if line.strip() else None
            except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
                row_step = step + 1  # a line cut by a kill
            if row_step is not None and row_step > step:
                dropped += 1
            elif row_step is not None:
                keep.append(line if line.endswith("\n") else line + "\n")
    if dropped:
        atomic_write(p, lambda f: f.writelines(keep), binary=False)
    return dropped


class MetricsLogger:
    """JSON lines (``{"step": s, name: value, ...}`` per call) plus TensorBoard when it is installed.

    A resumed run appends to the file. Pass ``resume_step`` (the step the run starts from, 0 for a
    new run) to first drop the lines, and TensorBoard events, of later steps: those a killed run
    wrote after its last checkpoint, which the resumed run does again.
    """

    def __init__(self, path: PathLike, enabled: bool = True, tensorboard: Union[bool, PathLike] = True,
                 resume_step: Optional[int] = None):
        self.path = Path(path)
        self.enabled = enabled
        self.writer = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if resume_step is not None:
                drop_metrics_after(self.path, resume_step)
            if tensorboard:
                try:
                    import tensorboard  # noqa: F401  (SummaryWriter imports it lazily and fails late)
                    from torch.utils.tensorboard import SummaryWriter

                    tb = self.path.parent / "tensorboard" if tensorboard is True else Path(tensorboard)
                    purge = {} if resume_step is None else {"purge_step": int(resume_step) + 1}
                    self.writer = SummaryWriter(str(tb), **purge)
                except Exception:  # noqa: BLE001 - TensorBoard is optional: no writer when it is missing
                    self.writer = None

    def log(self, step: int, **values: Any) -> None:
        """Append one line; numbers (and 0-d tensors) also go to TensorBoard."""
        if not self.enabled:
            return
        row: Dict[str, Any] = {"step": int(step)}
        for k, v in values.items():
            if isinstance(v, torch.Tensor) and v.numel() == 1:
                v = v.item()
            row[k] = v
        with open(self.path, "a") as f:
            f.write(json.dumps(_jsonable(row)) + "\n")
        if self.writer is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.writer.add_scalar(k, v, step)

    def log_image(self, step: int, tag: str, image_hwc: Any) -> None:
        """Send a uint8 ``(H, W, C)`` image to TensorBoard (if any)."""
        if self.enabled and self.writer is not None:
            self.writer.add_image(tag, image_hwc, step, dataformats="HWC")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def __enter__(self) -> "MetricsLogger":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_metrics(path: PathLike) -> List[Dict[str, Any]]:
    """The lines of a ``metrics.jsonl``, the last one per step, sorted by step."""
    rows: Dict[int, Dict[str, Any]] = {}
    p = Path(path)
    if not p.is_file():
        return []
    with open(p) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill
                    continue
                rows.setdefault(int(r.get("step", -1)), {}).update(r)
    return [rows[k] for k in sorted(rows)]


# --------------------------------------------------------------------------------- stopping
class StopOnSignal:
    """A context manager that turns SIGINT / SIGTERM into a stop request that a training loop checks
    after each step, so that it can save a checkpoint and return instead of dying mid-step::

        with StopOnSignal(announce=dist.is_primary) as stop:
            while step < iters:
                train_step()
                halt = any_process(stop.requested)   # every process stops at the same step
                if halt or step % ckpt_every == 0:
                    save()
                if halt:
                    break

    A second signal while a stop is pending acts as if there were no handler (SIGINT raises
    KeyboardInterrupt, SIGTERM ends the process): the way out of a step that hangs. Handlers are
    installed only in the main thread (Python allows no other; elsewhere the flag never rises);
    the previous ones come back on exit.
    """

    def __init__(self, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM), announce: bool = True):
        self.signals = tuple(signals)
        self.announce = announce
        self.signum: Optional[int] = None
        self._previous: Dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """Whether a stop was requested."""
        return self.signum is not None

    @property
    def signal_name(self) -> Optional[str]:
        """'SIGINT' / 'SIGTERM' once one arrived, else None."""
        return signal.Signals(self.signum).name if self.signum is not None else None

    def handle(self, signum: int, frame: Any = None) -> None:
        """The signal handler (call it directly to request a stop without a signal)."""
        if self.signum is not None and signum in self._previous:
            self._restore()
            signal.raise_signal(signum)  # now delivered to the previous handler
            return
        self.signum = signum
        if self.announce:
            print(f"\n{signal.Signals(signum).name}: stopping after this step with a checkpoint "
                  "(send it again to stop at once)", file=sys.stderr, flush=True)

    def _restore(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, signal.SIG_DFL if h is None else h)  # None: a handler set outside Python
        self._previous.clear()

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self.handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._restore()


def progress(total: int, initial: int = 0, desc: str = "", enabled: bool = True, **kw: Any):
    """A tqdm bar (rate, ETA) counting iterations from ``initial`` to ``total``; disabled unless ``enabled``.

    Pass ``enabled=dist_info.is_primary`` so only one process draws it.
    """
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True,
                unit="it", smoothing=0.05, **kw)


def infinite_indices(n: int, batch: int, generator: torch.Generator, rank: int = 0,
                     world_size: int = 1) -> Iterator[torch.Tensor]:
    """Endless ``(batch,)`` index batches: each epoch a fresh permutation, split across processes."""
    while True:
        perm = torch.randperm(n, generator=generator)
        perm = perm[rank::world_size] if world_size > 1 else perm
        for i in range(0, len(perm) - batch + 1, batch):
            yield perm[i:i + batch]
        if len(perm) < batch:  # fewer images than a batch: sample with replacement
            yield torch.randint(n, (batch,), generator=generator)
