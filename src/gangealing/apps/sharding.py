"""Split work across ``torchrun`` processes and merge the results back in input order.

Every large-folder command does the same three things: each rank takes every ``world_size``-th
item starting at its ``rank`` (:func:`shard`), processes its items in order, and all ranks
exchange their results so that rank 0 can write them in the original order (:func:`gather`).
In a single process both functions are the identity, so the commands run unchanged without
``torchrun``.

``dist`` is the ``DistInfo`` of :func:`gangealing.train.runtime.init_distributed` (anything with
``rank`` and ``world_size`` attributes works; ``None`` means one process).
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence


def _rank_world(dist: Any) -> tuple:
    if dist is None:
        return 0, 1
    return int(getattr(dist, "rank", 0)), int(getattr(dist, "world_size", 1))


def init_distributed(device: Optional[str] = None) -> Any:
    """This run's ``DistInfo``: :func:`gangealing.train.runtime.init_distributed` (starts the process
    group under ``torchrun``: gloo on CPU, NCCL on GPUs; one process otherwise)."""
    from ..train.runtime import init_distributed as _init

    return _init(device)


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


def _is_distributed(world: int) -> bool:
    if world <= 1:
        return False
    import torch.distributed as tdist

    return tdist.is_available() and tdist.is_initialized()


def gather(per_rank_results: Sequence, dist: Any) -> list:
    """Merge every rank's results (one per item of its :func:`shard`) into the original order.

    Under ``torchrun`` this is a collective (``all_gather_object``): every rank must call it and
    every rank gets the full list. In one process it returns ``list(per_rank_results)``. Results
    must be picklable; keep them small (paths, numbers, small CPU tensors).
    """
    rank, world = _rank_world(dist)
    mine = list(per_rank_results)
    if not _is_distributed(world):
        return mine
    import torch.distributed as tdist

    parts: List[Any] = [None] * world
    tdist.all_gather_object(parts, mine)
    total = sum(len(p) for p in parts)
    merged: List[Any] = [None] * total
    for r, part in enumerate(parts):
        for i, res in enumerate(part):
            merged[r + i * world] = res  # inverse of items[r::world]
    return merged


def barrier(dist: Any) -> None:
    """Wait for all ranks (no-op in one process)."""
    _, world = _rank_world(dist)
    if _is_distributed(world):
        import torch.distributed as tdist

        tdist.barrier()


def is_main(dist: Any) -> bool:
    """True on the process that writes shared outputs (rank 0)."""
    return _rank_world(dist)[0] == 0


def finish(dist: Any) -> None:
    """End of a command: wait for all ranks, then tear the process group down (no-op in one process).

    Leaving a gloo group up at interpreter exit can abort the last process to leave.
    """
    _, world = _rank_world(dist)
    if _is_distributed(world):
        import torch.distributed as tdist

        tdist.barrier()
        tdist.destroy_process_group()
