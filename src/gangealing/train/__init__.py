"""Training: the shared runtime (processes, run folders, logging) and the trainers built on it."""
from .runtime import (DistInfo, MetricsLogger, RunDir, RunInUseError, StopOnSignal, all_reduce_dict, all_reduce_grads,
                      all_reduce_mean, any_process, barrier, broadcast_module, check_resume_settings, cleanup_distributed,
                      drop_metrics_after, ema_update, init_distributed, progress, read_metrics, seed_everything, unwrap)

__all__ = [
    "DistInfo", "MetricsLogger", "RunDir", "RunInUseError", "StopOnSignal", "all_reduce_dict", "all_reduce_grads",
    "all_reduce_mean", "any_process", "barrier", "broadcast_module", "check_resume_settings", "cleanup_distributed",
    "drop_metrics_after", "ema_update", "init_distributed", "progress", "read_metrics", "seed_everything", "unwrap",
]
