"""Training: the shared runtime (processes, run folders, logging) and the trainers built on it."""
from .runtime import (DistInfo, MetricsLogger, RunDir, all_reduce_dict, all_reduce_grads, all_reduce_mean, barrier, broadcast_module,
                      cleanup_distributed, ema_update, init_distributed, progress, read_metrics, seed_everything, unwrap)

__all__ = [
    "DistInfo", "MetricsLogger", "RunDir", "all_reduce_dict", "all_reduce_grads", "all_reduce_mean", "barrier", "broadcast_module",
    "cleanup_distributed", "ema_update", "init_distributed", "progress", "read_metrics", "seed_everything", "unwrap",
]
