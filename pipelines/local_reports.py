"""A local run's HTML reports, gathered where a user of ``bertops run`` opens them.

kfp.local writes each task's outputs under ``<state_dir>/pipeline_root/<pipeline run>/<task>/``
(a ParallelFor iteration's tasks under ``for-loop-N-iteration-I/``, in the order of the planned
candidates). ``collect_reports`` copies the pages the Kubeflow UI would show into
``<state_dir>/reports/<pipeline run>/``: ``validation.html``, ``curves-<candidate>.html`` per
candidate, ``error-analysis.html`` for the winner, and ``selection.md``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

REPORTS_DIR = "reports"


def _file_name(candidate: str) -> str:
    """A candidate id as part of a file name: any character outside ``[A-Za-z0-9._-]`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", candidate)


def _planned_candidates(run_dir: Path) -> list[str]:
    """The candidate ids in plan order, from the plan-candidates task's executor output."""
    output = run_dir / "plan-candidates" / "executor_output.json"
    if not output.is_file():
        return []
    planned = json.loads(output.read_text(encoding="utf-8")).get("parameterValues", {}).get("Output", [])
    return [str(candidate.get("id", index)) for index, candidate in enumerate(planned)]


def collect_reports(state_dir: str | Path, pipeline_run: str) -> Path | None:
    """Copy the run ``pipeline_run``'s reports to ``<state_dir>/reports/<pipeline_run>``; returns that
    folder, or ``None`` when the run left no outputs there (another runner, or no such run)."""
    run_dir = Path(state_dir) / "pipeline_root" / pipeline_run
    if not pipeline_run or not run_dir.is_dir():
        return None
    out = Path(state_dir) / REPORTS_DIR / pipeline_run
    out.mkdir(parents=True, exist_ok=True)
    copies = {
        run_dir / "validate" / "report": out / "validation.html",
        run_dir / "select-winner" / "error_analysis": out / "error-analysis.html",
        run_dir / "select-winner" / "selection": out / "selection.md",
    }
    for index, candidate in enumerate(_planned_candidates(run_dir)):
        for curves in run_dir.glob(f"for-loop-*-iteration-{index}/finetune/curves"):
            copies[curves] = out / f"curves-{_file_name(candidate)}.html"
    for source, target in copies.items():
        if source.is_file():
            shutil.copyfile(source, target)
    return out
