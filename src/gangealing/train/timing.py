"""Wall-clock timing of training steps (``gangealing bench``'s training throughput, benchmarks/)."""
from __future__ import annotations

import time
from typing import Any, Callable, List, Union

import torch

__all__ = ["step_times"]


def step_times(step: Callable[[], Any], steps: int, warmup: int = 1,
               device: Union[str, torch.device] = "cpu") -> List[float]:
    """Seconds of each of ``steps`` calls of ``step`` after ``warmup`` untimed calls (CUDA work is
    waited for, so GPU times are real)."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    times = []
    for i in range(warmup + steps):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times
