"""The compute limit the benchmarks report against: the measured matmul peak of this machine."""

from __future__ import annotations

import time


def matmul_peak(size: int = 2048, repeats: int = 5, precision: str = "fp32") -> float:
    """Best ``torch.matmul`` rate in GFLOP/s with the process's threads, over ``repeats`` timings, in fp32 or bf16
    (on CPUs with AMX or AVX-512 BF16, bf16's is several times fp32's: MFU must use the peak of the precision run)."""
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.matmul(a, b)
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(4):
            torch.matmul(a, b)
        best = max(best, 4 * 2 * size**3 / (time.perf_counter() - started) / 1e9)
    return best
