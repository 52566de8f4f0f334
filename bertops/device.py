"""Device and precision choice, shared by training, evaluation and serving."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from bertops.errors import BertopsError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def pick_device(requested: str = "auto") -> torch.device:
    """``cuda`` when a GPU is visible, else ``cpu``; an explicit ``cuda`` fails when there is no GPU.

    ``auto`` is for machines that may or may not have a GPU. A pod that was given GPUs asks for
    ``cuda``: there a broken driver or runtime must stop the run, not turn it into a CPU run
    that holds the GPU and trains many times slower.
    """
    import torch

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BertopsError(f"device={requested} was asked for, but CUDA is not available here ({_no_cuda_reason()})")
    return device


def _no_cuda_reason() -> str:
    """Why ``torch.cuda.is_available()`` is False, in a few words (torch's own message where it has one)."""
    import torch

    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    try:
        torch.cuda.init()
    except Exception as exc:  # noqa: BLE001 - any failure of the CUDA runtime is the reason wanted here
        return " ".join(str(exc).split())[:300] or type(exc).__name__
    return f"no GPU visible to torch {torch.__version__} (CUDA {torch.version.cuda})"


def cpu_has_native_bf16() -> bool:
    """True on CPUs with AVX-512 BF16 or AMX; elsewhere bf16 autocast is emulated and much slower."""
    import torch

    # torch.cpu's probes read the CPU's own feature bits; get_cpu_capability() names only the
    # kernels ATen dispatches to ("AVX512" on an AMX Xeon), so it alone misses these CPUs.
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    if any(probe is not None for probe in probes):
        return any(probe() for probe in probes if probe is not None)
    capability = torch.backends.cpu.get_cpu_capability()
    return capability in ("AVX512_BF16", "AMX") or "AMX" in capability


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; ``None`` means plain fp32.

    ``auto`` picks bf16 on GPUs with native bf16 (compute capability 8.0 and up), fp16 on older
    GPUs, bf16 on CPUs with native bf16 instructions, and fp32 otherwise (bf16 emulation measured
    ~20x slower on AVX2 CPUs). ``torch.cuda.is_bf16_supported()`` alone also counts a GPU that
    can merely hold bf16 tensors (a T4, capability 7.5), where every bf16 op is emulated:
    ``including_emulation=False`` keeps those on fp16.
    """
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else None


def precision_name(dtype: torch.dtype | None) -> str:
    """``bfloat16``, ``float16`` or ``fp32``: how results and checkpoints name an ``autocast_dtype``."""
    return str(dtype).removeprefix("torch.") if dtype is not None else "fp32"


def compile_toolchain_problem(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot build kernels for ``device`` here, or None when it can.

    Both of its code generators compile native code at run time. On CUDA, Triton builds its
    launcher with ``$CC``, else ``gcc``, else ``clang`` (triton/runtime/build.py, ``_build``).
    On CPU, Inductor builds C++ with ``$CXX``, else ``g++`` (torch/_inductor/config.py,
    ``cpp.cxx``; cpp_builder.py, ``get_cpp_compiler``).
    """
    if device.type == "cuda":
        cc = os.environ.get("CC")
        found = shutil.which(cc) if cc else shutil.which("gcc") or shutil.which("clang")
        wanted = f"CC={cc}" if cc else "gcc or clang"
        why = "Triton compiles its GPU kernel launcher with a C compiler"
    else:
        cxx = os.environ.get("CXX")
        found = shutil.which(cxx or "g++")
        wanted = f"CXX={cxx}" if cxx else "g++"
        why = "Inductor compiles CPU kernels with a C++ compiler"
    if found:
        return None
    return f"compile=true on {device.type} needs {wanted} on PATH ({why}); install one or train with compile=false"


class DeviceClock:
    """Seconds of training on ``device``, measured over stretches of steps.

    CUDA runs kernels asynchronously: a host clock read after queueing a step measures the
    queueing, not the work. The clock therefore waits for the device (``torch.cuda.synchronize``)
    where a stretch starts and ends, never within one, so steps keep overlapping each other.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = 0.0
        self._since: float | None = None

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._since is not None

    def _sync(self) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)

    def start(self) -> None:
        """Begin a stretch (a no-op while one runs, so a loop may call it every step)."""
        if self._since is None:
            self._sync()
            self._since = time.perf_counter()

    def stop(self) -> None:
        """End the stretch once the device has finished its work (a no-op when none runs)."""
        if self._since is not None:
            self._sync()
            self.seconds += time.perf_counter() - self._since
            self._since = None

    @contextmanager
    def away(self) -> Iterator[None]:
        """Leave out the host time spent inside the block (a caller's own work between steps).

        It does not wait for the device: work queued before the block may still run during it.
        """
        left = time.perf_counter()
        try:
            yield
        finally:
            if self._since is not None:
                self._since += time.perf_counter() - left
