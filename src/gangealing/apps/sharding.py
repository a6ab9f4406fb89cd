"""The applications' view of :mod:`gangealing.distributed` (kept so that older imports work).

Split work across ``torchrun`` processes with :func:`shard`, merge the results back in input order
with :func:`gather`, write on :func:`is_main`; :func:`gangealing.apps.align.run_sharded` does all of
it for a folder of images.
"""
from ..distributed import barrier, finish, gather, init_distributed, is_main, shard, shard_indices

__all__ = ["barrier", "finish", "gather", "init_distributed", "is_main", "shard", "shard_indices"]
