"""The checkout's commit, which a run records with the model it registers."""

from __future__ import annotations

import subprocess
from pathlib import Path

# The checkout this code runs from: its commit is the pipeline's code, wherever the command runs.
CODE_ROOT = Path(__file__).resolve().parents[1]


def commit(root: Path = CODE_ROOT) -> str:
    """``HEAD`` of the checkout at ``root``, ``-dirty`` with uncommitted changes, ``unknown`` outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head
