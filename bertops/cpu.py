"""How many CPU threads this process should use: its CPU affinity and its cgroup's CPU quota.

torch and ONNX Runtime size their thread pools by the machine's cores. In a pod that is the
node's cores, not the container's CPU limit (the cgroup quota): a 4-CPU limit on a 64-core node
gets 64 threads that the kernel throttles to 4 CPUs' worth of time, which is slower than 4
threads. Both the training loop and the server take their thread counts from here.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
# Kubernetes sets this in every pod; outside a pod the candidates of a run share one machine.
IN_POD_ENV = "KUBERNETES_SERVICE_HOST"


def _v2_quota(root: Path, proc_cgroup: str) -> float | None:
    """The tightest ``cpu.max`` quota (in CPUs) on the path from this process's cgroup v2 to the root."""
    relative = next((line[3:] for line in proc_cgroup.splitlines() if line.startswith("0::")), None)
    if relative is None:
        return None
    quotas = []
    directory = root / relative.strip().lstrip("/")
    for folder in [directory, *directory.parents]:
        limit = folder / "cpu.max"
        if limit.is_file():
            quota, _, period = limit.read_text(encoding="utf-8").strip().partition(" ")
            if quota != "max" and period:
                quotas.append(int(quota) / int(period))
        if folder == root:
            break
    return min(quotas) if quotas else None


def _v1_quota(root: Path) -> float | None:
    """The CFS quota (in CPUs) of a cgroup v1 ``cpu`` controller, if one is set."""
    for controller in ("cpu,cpuacct", "cpu"):
        quota_file = root / controller / "cpu.cfs_quota_us"
        period_file = root / controller / "cpu.cfs_period_us"
        if quota_file.is_file() and period_file.is_file():
            quota = int(quota_file.read_text(encoding="utf-8"))
            period = int(period_file.read_text(encoding="utf-8"))
            return quota / period if quota > 0 and period > 0 else None
    return None


def cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """This process's CPU limit in CPUs (e.g. 1.5 for a ``1500m`` limit), or None when there is none."""
    text = proc_cgroup.read_text(encoding="utf-8") if proc_cgroup.is_file() else ""
    quota = _v2_quota(root, text)
    return quota if quota is not None else _v1_quota(root)


def available_cpus(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> int:
    """The CPUs this process may use: its affinity, capped by its cgroup quota (rounded up), at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cpu_quota(root, proc_cgroup)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def thread_share(sharing: int = 1) -> int:
    """Threads for one of ``sharing`` processes that run at once on this machine's CPUs (at least 1).

    In a pod each process has its own quota, so there ``sharing`` does not divide it.
    """
    if os.environ.get(IN_POD_ENV):
        sharing = 1
    return max(1, available_cpus() // max(1, sharing))
