"""bench/gpu_smoke.py --dry-run: the GPU smoke run's code paths on CPU, so the script cannot rot before a GPU runs it.

The first GPU machine may be bare: PyTorch, transformers, tokenizers and onnxruntime and what
they require, nothing else, nothing to install. The second test runs the dry run with every
other top-level package made unfindable, as on such a machine.
"""

from __future__ import annotations

import json
import os
import pkgutil
import re
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "bench" / "gpu_smoke.py"
# What a bare GPU machine has (issue 12), and the project's own packages from the checkout.
BARE_PACKAGES = ("torch", "transformers", "tokenizers", "onnxruntime")
PROJECT_PACKAGES = ("bertops", "components", "serving")
# Rows that need a GPU: skipped by the dry run. The others run the same code on CPU and must pass.
DEVICE_ROWS = {"device", "nccl", "compile", "onnx_cuda", "bert_base_train", "serve_latency"}
CODE_ROWS = {"setup", "train_bf16", "train_fp16", "resume", "serve_parity"}

# Installed as sitecustomize in the child: every finder on sys.meta_path answers "not found" for
# a top-level name outside the allowed set, as if the package were not installed (a probe such
# as importlib.util.find_spec("pandas") then gets None, an import ModuleNotFoundError).
BLOCKER = """
import json, sys
from pathlib import Path

ALLOWED = frozenset(json.loads((Path(__file__).parent / "allowed.json").read_text()))


class Blocking:
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] not in ALLOWED:
            return None
        return self.finder.find_spec(fullname, path, target)

    def __getattr__(self, name):
        return getattr(self.finder, name)


sys.meta_path[:] = [Blocking(finder) for finder in sys.meta_path]
"""


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def bare_machine_modules() -> set[str]:
    """Top-level modules of a bare GPU machine: the stdlib, the four packages and their requirements, the project."""
    wanted: set[str] = set()
    todo = list(BARE_PACKAGES)
    while todo:
        name = _normalized(todo.pop())
        if name in wanted:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a requirement of another platform (nvidia-*, triton on a CPU wheel)
        wanted.add(name)
        for spec in dist.requires or []:
            requirement = Requirement(spec)
            # Requirements behind an extra (marker "extra == ...") are not installed with the package.
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    installed = {
        module
        for module, dists in metadata.packages_distributions().items()
        if any(_normalized(d) in wanted for d in dists)
    }
    # The stdlib: its listed names, and what its folders hold beyond them (_sysconfigdata_*, which
    # sysconfig imports by a platform-dependent name).
    stdlib_dirs = [sysconfig.get_path("stdlib"), str(Path(sysconfig.get_path("platstdlib")) / "lib-dynload")]
    stdlib = set(sys.stdlib_module_names) | {module.name for module in pkgutil.iter_modules(stdlib_dirs)}
    return installed | stdlib | set(PROJECT_PACKAGES)


def dry_run(tmp_path: Path, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], Any]:
    """``python bench/gpu_smoke.py --dry-run`` from the repository root; the process and its JSON."""
    out = tmp_path / "smoke.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)],
        cwd=REPO_ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = json.loads(out.read_text()) if out.is_file() else None
    return done, report


def assert_dry_run_passed(done: subprocess.CompletedProcess[str], report: Any) -> None:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = {row["name"]: row for row in report["rows"]}
    assert set(rows) == DEVICE_ROWS | CODE_ROWS
    assert not [row for row in rows.values() if row["status"] == "FAIL"], done.stdout
    assert {name for name, row in rows.items() if row["status"] == "SKIP"} == DEVICE_ROWS
    assert {name for name, row in rows.items() if row["status"] == "PASS"} == CODE_ROWS
    assert report["dry_run"] is True
    for name in rows:
        assert f"| {name} |" in done.stdout
    assert "4,000 samples/s" in done.stdout


def test_dry_run_passes_and_skips_only_the_device_rows(tmp_path: Path) -> None:
    done, report = dry_run(tmp_path)
    assert_dry_run_passed(done, report)
    rows = {row["name"]: row for row in report["rows"]}
    assert rows["train_bf16"]["data"]["precision"] == "bfloat16"
    assert rows["train_fp16"]["data"]["precision"] == "float16"
    assert rows["resume"]["data"]["resumed_from_step"] == 15
    assert rows["serve_parity"]["data"]["argmax_agreement"] >= 0.99


def test_dry_run_needs_only_torch_transformers_tokenizers_onnxruntime(tmp_path: Path) -> None:
    """The loop and the predictor import and run with nothing but what a bare GPU machine has."""
    allowed = bare_machine_modules()
    # The block must cover the project's other dependencies, or this test shows nothing.
    for dependency in ("pandas", "pyarrow", "matplotlib", "mlflow", "kserve", "kfp", "great_expectations", "dvc"):
        assert dependency not in allowed
    site = tmp_path / "site"
    site.mkdir()
    (site / "allowed.json").write_text(json.dumps(sorted(allowed)))
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {"PYTHONPATH": str(site)}
    probe = subprocess.run(
        [sys.executable, "-c", "import importlib.util, torch, transformers; print(importlib.util.find_spec('pandas'))"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.stdout.strip() == "None", probe.stderr
    done, report = dry_run(tmp_path, env)
    assert_dry_run_passed(done, report)
