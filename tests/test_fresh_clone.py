"""A clone without ../shared (the KServe CRDs) still passes `make test`: only the checks that need
the CRDs skip, each with a one-line notice; in CI (``CI=true``) those checks must run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[1]


def _pytest_without_crds(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["BERTOPS_KSERVE_CRDS"] = str(tmp_path)  # an empty folder: no CRDs anywhere
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_manifests.py"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_without_the_crds_only_their_checks_skip_with_a_notice(tmp_path: Path) -> None:
    result = _pytest_without_crds(tmp_path, ci=False)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "skipped" in result.stdout and "passed" in result.stdout
    assert "no KServe CRDs in" in result.stdout


def test_in_ci_missing_crds_fail(tmp_path: Path) -> None:
    result = _pytest_without_crds(tmp_path, ci=True)
    assert result.returncode == 1, result.stdout[-2000:]
    assert "CI runs the KServe schema checks" in result.stdout
