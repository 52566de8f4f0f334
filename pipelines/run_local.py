"""Run the pipeline on the embedded runtime: ``kfp.local`` with the subprocess runner.

Each step runs as a real KFP task in a subprocess of this Python environment; artifacts land
under ``<state_dir>/pipeline_root``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from bertops.config import PipelineConfig
from bertops.errors import BertopsError
from bertops.step import ERROR_FILE_ENV

log = logging.getLogger(__name__)


@dataclass
class LocalRunResult:
    """The pipeline's outputs from a local run."""

    data_version: str
    validation: str
    winner: str
    version: str
    log_file: Path


# Executor chatter that the full log keeps but the terminal does not need.
_NOISE = (
    "Got executor_input",
    "Looking for component",
    "Loading KFP component",
    "Wrote executor output",
    "Skipping registering",
    "RuntimeWarning",
    "warnings.warn(",
    "Streamed logs",
)


class _StepLogFilter(io.TextIOBase):
    """Everything the tasks print goes to the run's log file; the terminal gets the steps' own
    log lines (progress, results, errors) without the executor's JSON dumps."""

    def __init__(self, log: TextIO, terminal: TextIO, verbose: bool):
        self._log, self._terminal, self._verbose = log, terminal, verbose
        self._buffer = ""

    def write(self, text: str) -> int:
        self._log.write(text)
        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            step_line = "[KFP Executor" in line or "Executing task" in line or "finished with status" in line
            if self._verbose or (step_line and not any(n in line for n in _NOISE)):
                self._terminal.write(line + "\n")
        self._terminal.flush()
        return len(text)

    def flush(self) -> None:
        self._log.flush()
        self._terminal.flush()


def run_local(config: PipelineConfig, git_commit: str = "unknown", verbose: bool = False) -> LocalRunResult:
    """Run the whole pipeline with ``config``; ``BertopsError`` names the failing step and why.

    Paths in ``config`` should be absolute: the tasks run as subprocesses. The tasks' full
    output goes to ``<state_dir>/runs/<time>.log``.
    """
    from kfp import local

    # Expected locally: the tasks run in this environment, not in their images (use_venv=False),
    # and resource requests only apply on a cluster.
    warnings.filterwarnings("ignore", message=".*custom or non-Python base image.*")
    warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")

    from pipelines.training_pipeline import build_pipeline

    state_dir = Path(config.registry.state_dir)
    pipeline_root = state_dir / "pipeline_root"
    pipeline_root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), raise_on_error=True)
    log_file = state_dir / "runs" / time.strftime("%Y%m%d-%H%M%S.log")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="bertops-run-") as scratch,
        log_file.open("w", encoding="utf-8") as log_handle,
        contextlib.redirect_stdout(_StepLogFilter(log_handle, sys.stdout, verbose)),
    ):
        error_file = Path(scratch) / "error.txt"
        previous = os.environ.get(ERROR_FILE_ENV)
        os.environ[ERROR_FILE_ENV] = str(error_file)
        try:
            task = build_pipeline(gpu_request=False)(**config.to_arguments(), git_commit=git_commit)
        except Exception as exc:
            if error_file.is_file():
                raise BertopsError(error_file.read_text(encoding="utf-8")) from exc
            raise BertopsError(f"pipeline failed: {exc} (full log: {log_file})") from exc
        finally:
            if previous is None:
                os.environ.pop(ERROR_FILE_ENV, None)
            else:
                os.environ[ERROR_FILE_ENV] = previous
    outputs = task.outputs
    return LocalRunResult(
        data_version=str(outputs["data_version"]),
        validation=str(outputs["validation"]),
        winner=str(outputs["winner"]),
        version=str(outputs["version"]),
        log_file=log_file,
    )
