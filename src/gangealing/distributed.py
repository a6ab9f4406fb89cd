"""Processes and devices: start a ``torchrun`` job, split work across its processes, merge results back.

Every process of a job holds a :class:`DistInfo` (rank, world size, device), from
:func:`init_distributed`; without ``torchrun`` it is one process and nothing is initialised, so
all functions here are identities or no-ops and the same code runs either way.

* Trainers: :func:`all_reduce_mean`, :func:`all_reduce_dict`, :func:`all_reduce_grads`,
  :func:`broadcast_module` and :func:`any_process` (decisions every process takes at the same step).
* Large-folder applications: each rank takes every ``world_size``-th item starting at its
  ``rank`` (:func:`shard`), processes its items in order, and all ranks exchange their results so
  that rank 0 (:func:`is_main`) writes them in the original order (:func:`gather`);
  :func:`finish` ends a command.

``dist`` arguments take a :class:`DistInfo` (anything with ``rank`` and ``world_size``
attributes works); ``None`` means one process, except for :func:`barrier`, where it means every
process of the started group (the trainers' use).
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Sequence, Union

import torch
import torch.distributed as tdist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: rank, world size, local rank, device, primary or not."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    is_primary: bool = True

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


# --------------------------------------------------------------------------------- starting, stopping
def pick_device(device: Union[str, torch.device, None] = None, local_rank: int = 0) -> torch.device:
    """``device`` if given ('cpu', 'cuda', 'cuda:1'); else this process's GPU if there is one, else the CPU."""
    if device is not None and str(device) != "auto":
        d = torch.device(device)
        if d.type == "cuda" and d.index is None:
            d = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
        return d
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(device: Union[str, torch.device, None] = None, timeout_s: float = 1800) -> DistInfo:
    """Start the process group when launched by ``torchrun`` (NCCL on CUDA, gloo on CPU); else one process.

    ``device``: 'cpu' forces CPU (and gloo) even where GPUs exist; default picks GPU ``LOCAL_RANK``.
    Calling it again in a process whose group is already up returns the same information.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not tdist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        tdist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s),
                                 **({"device_id": dev} if dev.type == "cuda" else {}))
    if tdist.is_initialized():
        rank, world = tdist.get_rank(), tdist.get_world_size()
    return DistInfo(rank, world, local, dev, rank == 0)


def cleanup_distributed() -> None:
    """Tear the process group down (no-op for one process)."""
    if tdist.is_initialized():
        tdist.destroy_process_group()


def _group_world() -> int:
    """World size of the started process group (1 when none is)."""
    return tdist.get_world_size() if tdist.is_available() and tdist.is_initialized() else 1


def _rank_world(dist: Any) -> tuple:
    if dist is None:
        return 0, 1
    return int(getattr(dist, "rank", 0)), int(getattr(dist, "world_size", 1))


def _is_distributed(world: int) -> bool:
    return world > 1 and tdist.is_available() and tdist.is_initialized()


def barrier(dist: Any = None) -> None:
    """Wait for every process of ``dist`` (None: of the started group); a no-op for one process."""
    world = _group_world() if dist is None else _rank_world(dist)[1]
    if _is_distributed(world):
        tdist.barrier()


def finish(dist: Any) -> None:
    """End of a command: wait for all ranks, then tear the process group down (no-op in one process).

    Leaving a gloo group up at interpreter exit can abort the last process to leave.
    """
    if _is_distributed(_rank_world(dist)[1]):
        tdist.barrier()
        tdist.destroy_process_group()


# --------------------------------------------------------------------------------- trainers
def all_reduce_mean(x: Union[torch.Tensor, float]) -> torch.Tensor:
    """Mean of ``x`` over all processes (a new tensor; for one process, ``x`` detached)."""
    t = x.detach().clone() if isinstance(x, torch.Tensor) else torch.tensor(float(x))
    if tdist.is_initialized() and tdist.get_world_size() > 1:
        if tdist.get_backend() == "nccl" and t.device.type != "cuda":
            t = t.cuda()
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        t = t / tdist.get_world_size()
    return t


def any_process(flag: bool) -> bool:
    """True on every process when ``flag`` is true on any of them (one all-reduce; ``flag`` for one process).

    Use it for decisions that every process must take at the same step, such as stopping.
    """
    if tdist.is_initialized() and tdist.get_world_size() > 1:
        return bool(all_reduce_mean(float(flag)).item() > 0)
    return bool(flag)


def all_reduce_dict(values: Mapping[str, Union[torch.Tensor, float]],
                    device: Union[str, torch.device] = "cpu") -> Dict[str, float]:
    """Means over processes of a dict of scalars, in one collective: ``{name: float}``."""
    if not values:
        return {}
    keys = sorted(values)
    t = torch.stack([torch.as_tensor(values[k], dtype=torch.float32, device=device).detach().reshape(())
                     for k in keys])
    t = all_reduce_mean(t)
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def all_reduce_grads(*modules: nn.Module) -> None:
    """Average the gradients of ``modules`` over processes, in one collective (no-op for one process).

    This is what DistributedDataParallel does after ``backward``, done explicitly so that it also
    works for double backward (R1) and for losses that leave some parameters unused (lazy
    regularisation): parameters without a gradient contribute zeros.
    """
    if not (tdist.is_initialized() and tdist.get_world_size() > 1):
        return
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    if not params:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])
    tdist.all_reduce(flat, op=tdist.ReduceOp.SUM)
    flat /= tdist.get_world_size()
    offset = 0
    for p in params:
        n = p.numel()
        g = flat[offset:offset + n].view_as(p)
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.copy_(g)
        offset += n


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy parameters and buffers of ``module`` from process ``src`` to all others (in place)."""
    if tdist.is_initialized() and tdist.get_world_size() > 1:
        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                tdist.broadcast(t.data, src)


# --------------------------------------------------------------------------------- splitting work
def shard_indices(n: int, dist: Any) -> range:
    """Indices into a sequence of length ``n`` that this rank handles: ``rank, rank + world, ...``."""
    rank, world = _rank_world(dist)
    return range(rank, n, world)


def shard(items: Sequence, dist: Any) -> list:
    """This rank's items, ``items[rank::world_size]``, in their original relative order.

    Item ``i`` of the returned list is item ``rank + i * world_size`` of ``items``; :func:`gather`
    uses exactly this to put results back in place.
    """
    rank, world = _rank_world(dist)
    return list(items)[rank::world]


def gather(per_rank_results: Sequence, dist: Any) -> list:
    """Merge every rank's results (one per item of its :func:`shard`) into the original order.

    Under ``torchrun`` this is a collective (``all_gather_object``): every rank must call it and
    every rank gets the full list. In one process it returns ``list(per_rank_results)``. Results
    must be picklable; keep them small (paths, numbers, small CPU tensors).
    """
    world = _rank_world(dist)[1]
    mine = list(per_rank_results)
    if not _is_distributed(world):
        return mine
    parts: List[Any] = [None] * world
    tdist.all_gather_object(parts, mine)
    total = sum(len(p) for p in parts)
    merged: List[Any] = [None] * total
    for r, part in enumerate(parts):
        for i, res in enumerate(part):
            merged[r + i * world] = res  # inverse of items[r::world]
    return merged


def is_main(dist: Any) -> bool:
    """True on the process that writes shared outputs (rank 0)."""
    return _rank_world(dist)[0] == 0
