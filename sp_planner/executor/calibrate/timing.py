"""Wall-clock timing of device work: warm up, synchronize, time `iters` calls, return the mean."""

from __future__ import annotations

import time
from typing import Callable

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mean_time_s(fn: Callable[[], object], device: torch.device, *, warmup: int, iters: int,
                before: Callable[[], object] | None = None) -> float:
    """Mean seconds per call over `iters` back-to-back calls, launch overhead included (as
    nccl-tests times its loop). `before` runs after the warm-up, outside the timed region (a
    barrier that lines the ranks up)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    if before is not None:
        before()
        synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / iters
