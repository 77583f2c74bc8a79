"""Timing training steps for ``cxrlib.train.throughput`` (``python -m cxrlib bench``): untimed warm-up steps,
then timed ones, with the device synchronised at both ends."""

from __future__ import annotations

import time

import torch


def time_steps(step, device: torch.device, steps: int, warmup: int) -> tuple[float, int | None]:
    """Run ``step()`` ``warmup`` times untimed, then ``steps`` times timed. Returns the timed seconds and, on
    CUDA, the peak memory allocated during the timed steps in bytes (None elsewhere)."""

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    dt = time.perf_counter() - t0
    return dt, (torch.cuda.max_memory_allocated() if device.type == "cuda" else None)
