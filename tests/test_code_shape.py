"""The shape rules of the code base that no linter here checks: short functions."""

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bertops", "serving", "components", "pipelines", "cli", "bench")
MAX_FUNCTION_LINES = 60
# Declarative code: the pipeline's signature is its run form in the Kubeflow UI, one parameter
# per line, and KFP reads it from the function itself.
DECLARATIVE = {"pipelines/training_pipeline.py::training_pipeline"}


def long_functions(root: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``path::name (N lines)`` for every function or method longer than ``limit`` lines."""
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    where = f"{path.relative_to(root)}::{node.name}"
                    if lines > limit and where not in DECLARATIVE:
                        found.append(f"{where} ({lines} lines)")
    return found


def test_no_function_is_longer_than_sixty_lines() -> None:
    assert long_functions(REPO_ROOT) == []


def test_the_check_sees_a_long_function(tmp_path: Path) -> None:
    (tmp_path / "bertops").mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    (tmp_path / "bertops" / "long.py").write_text(f"def long() -> None:\n{body}\n", encoding="utf-8")
    assert long_functions(tmp_path) == ["bertops/long.py::long (62 lines)"]
