"""Thread counts from the CPU affinity and the cgroup CPU limit, for training and serving (issue 16).

The cgroup trees below are files laid out as the kernel lays them out (cgroup v2 ``cpu.max``,
v1 ``cpu.cfs_quota_us``); tests/test_containers.py checks the same code in a container that
really has a CPU limit.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bertops.cpu import available_cpus, cpu_quota, thread_share
from components.finetune.config import LoopConfig, check_config
from components.finetune.finetune import training_threads


def _v2_tree(tmp_path: Path, limits: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for relative, value in limits.items():
        folder = root / relative
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cpu.max").write_text(value + "\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("0::/kubepods/pod1/ctr\n")
    return root, proc


def test_cgroup_v2_takes_the_tightest_limit_on_the_way_to_the_root(tmp_path: Path) -> None:
    root, proc = _v2_tree(
        tmp_path,
        {"": "max 100000", "kubepods": "max 100000", "kubepods/pod1": "150000 100000", "kubepods/pod1/ctr": "max"},
    )
    assert cpu_quota(root, proc) == 1.5
    # A 1.5-CPU limit gets 2 threads, never more than the affinity allows.
    assert available_cpus(root, proc) == min(2, len(os.sched_getaffinity(0)))


def test_no_limit_means_the_affinity(tmp_path: Path) -> None:
    root, proc = _v2_tree(tmp_path, {"": "max 100000", "kubepods/pod1/ctr": "max 100000"})
    assert cpu_quota(root, proc) is None
    assert available_cpus(root, proc) == len(os.sched_getaffinity(0))


def test_cgroup_v1_cfs_quota(tmp_path: Path) -> None:
    controller = tmp_path / "cgroup" / "cpu,cpuacct"
    controller.mkdir(parents=True)
    (controller / "cpu.cfs_quota_us").write_text("50000\n")
    (controller / "cpu.cfs_period_us").write_text("100000\n")
    missing = tmp_path / "no-proc-file"
    assert cpu_quota(tmp_path / "cgroup", missing) == 0.5
    assert available_cpus(tmp_path / "cgroup", missing) == 1
    (controller / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_quota(tmp_path / "cgroup", missing) is None


def test_candidates_side_by_side_share_the_cpus_but_pods_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    cores = available_cpus()
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert thread_share(2) == max(1, cores // 2)
    assert thread_share(cores * 4) == 1
    # Each pod has its own CPU limit: dividing it by the run's candidates would waste it.
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert thread_share(2) == cores


def test_training_threads_setting_then_omp_then_share(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert training_threads(LoopConfig(cpu_sharing=2)) == thread_share(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert training_threads(LoopConfig(cpu_sharing=2)) == 3
    assert training_threads(LoopConfig(threads=5)) == 5


def test_bad_thread_settings_are_named() -> None:
    with pytest.raises(Exception, match=r"threads=-1.*cpu_sharing=0|cpu_sharing=0.*threads=-1"):
        check_config(LoopConfig(threads=-1, cpu_sharing=0))
