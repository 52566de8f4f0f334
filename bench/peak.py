"""The compute limit the benchmarks report against: the measured fp32 matmul peak of this machine."""

from __future__ import annotations

import time


def matmul_peak(size: int = 2048, repeats: int = 5) -> float:
    """Best fp32 ``torch.matmul`` rate in GFLOP/s with the process's threads, over ``repeats`` timings."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(4):
            torch.matmul(a, b)
        best = max(best, 4 * 2 * size**3 / (time.perf_counter() - started) / 1e9)
    return best
