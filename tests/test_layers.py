"""The layers of issue 13, enforced by import-linter: cli > pipelines > components > serving > bertops,
and no step imports another. The contracts live in pyproject.toml; `make lint` runs the same check."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bertops", "serving", "components", "pipelines", "cli")
LINT_IMPORTS = shutil.which("lint-imports", path=str(Path(sys.executable).parent))


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports on the tree at ``root``: its own pyproject.toml, its packages first on the path."""
    assert LINT_IMPORTS, "import-linter is a dev dependency"
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache", "--no-logo"], cwd=root, env=env, capture_output=True, text=True, check=False
    )


def test_the_tree_keeps_every_contract() -> None:
    result = lint_imports(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


@pytest.mark.parametrize(
    ("module", "injected", "contract", "named"),
    [
        (
            "components/gate/gate.py",
            "import components.tokenize.tokenization",
            "steps are independent",
            "components.gate.gate -> components.tokenize.tokenization",
        ),
        ("bertops/errors.py", "import serving.config", "layers", "bertops.errors -> serving.config"),
        ("serving/config.py", "from pipelines import compile", "layers", "serving.config -> pipelines.compile"),
    ],
    ids=["step-imports-step", "core-imports-serving", "serving-imports-pipelines"],
)
def test_an_import_across_the_rules_breaks_its_contract(
    tmp_path: Path, module: str, injected: str, contract: str, named: str
) -> None:
    """The check catches what it is for, in a copy of the tree with one offending import added."""
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path)
    target = tmp_path / module
    target.write_text(f"{target.read_text()}\n{injected}\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken and named in broken, result.stdout
