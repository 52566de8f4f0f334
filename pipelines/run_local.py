"""Run the pipeline on one machine: ``kfp.local`` with the subprocess or the docker runner.

``subprocess`` (the default): each step runs as a real KFP task in a subprocess of this Python
environment. ``docker``: each step runs in the container image the compiled pipeline names
(``kfp.local.DockerRunner``), as the image's non-root user, on the host network, with the data
(read-only) and the state directory mounted at their own paths. Artifacts land under
``<state_dir>/pipeline_root`` either way.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from bertops.config import PipelineConfig
from bertops.errors import BertopsError
from bertops.redact import redact_credentials
from bertops.step import ERROR_FILE_ENV
from bertops.tracking import fail_unfinished_runs
from pipelines import run_records
from pipelines.task_group import tasks_die_with_this_process

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
    log lines (progress, results, errors) without the executor's JSON dumps.

    Both get whole lines with the credentials of URLs masked (``bertops.redact``): the executor
    prints every task input, a tracking URI with a token among them. A line is written once its
    newline arrives, so a URL split over two writes is still masked.
    """

    def __init__(self, log: TextIO, terminal: TextIO, verbose: bool):
        self._log, self._terminal, self._verbose = log, terminal, verbose
        self._buffer = ""

    def write(self, text: str) -> int:
        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        for line in map(redact_credentials, lines):
            self._log.write(line + "\n")
            step_line = "[KFP Executor" in line or "Executing task" in line or "finished with status" in line
            if self._verbose or (step_line and not any(n in line for n in _NOISE)):
                self._terminal.write(line + "\n")
        self._terminal.flush()
        return len(text)

    def flush(self) -> None:
        self._log.flush()
        self._terminal.flush()


RUNNERS = ("subprocess", "docker")


def _drop_handlers_writing_to(stream_type: type) -> None:
    """Remove log handlers that libraries attached to the run's redirected stdout while it ran:
    that stream is closed once the run ends, and later log lines would fail to write."""
    loggers = [
        logging.getLogger(),
        *(lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)),
    ]
    for logger in loggers:
        for handler in list(logger.handlers):
            if isinstance(getattr(handler, "stream", None), stream_type):
                logger.removeHandler(handler)


def _others_can_read(path: Path) -> bool:
    mode = path.stat().st_mode
    return bool(mode & 0o004) and (not path.is_dir() or bool(mode & 0o001))


def _docker_runner(config: PipelineConfig, state_dir: Path, error_dir: Path) -> Any:
    """The DockerRunner: the image's user, host network, data and local model read-only, state read-write."""
    from docker.types import Mount
    from kfp import local

    from bertops import containers

    engine = containers.client()
    for warning in containers.ensure_step_images(engine):
        log.warning("%s", warning)
    # The image's user (UID 10001) writes the registry, the artifacts and the error file.
    for path in (state_dir, *state_dir.rglob("*")):
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o777 if path.is_dir() else path.stat().st_mode | 0o666)
    error_dir.chmod(0o777)
    mounts = [Mount(str(state_dir), str(state_dir), type="bind")]
    read_only = [Path(config.data.data_path)]
    base_model = Path(config.train.base_model)
    if base_model.is_absolute() and base_model.exists():
        read_only.append(base_model)
    for path in read_only:
        # data.dvc beside the data: the validate step reads the data version from it.
        for source in (path, path.parent / f"{path.name}.dvc"):
            if not source.exists():
                continue
            unreadable = [p for p in (source, *source.rglob("*")) if not _others_can_read(p)]
            if unreadable:
                raise BertopsError(
                    f"{unreadable[0]}: not readable by the images' user (UID 10001), which the docker runner "
                    f"runs the steps as; make it readable: chmod -R o+rX {source}"
                )
            mounts.append(Mount(str(source), str(source), type="bind", read_only=True))
    return local.DockerRunner(
        network_mode="host",
        user=containers.IMAGE_USER,
        mounts=mounts,
        environment={ERROR_FILE_ENV: str(error_dir / "error.txt")},
    )


def _task_runner(config: PipelineConfig, runner: str, state_dir: Path, scratch: Path) -> Any:
    """The kfp.local runner the tasks run on: this environment, or each step's image."""
    from kfp import local

    if runner == "docker":
        return _docker_runner(config, state_dir, scratch)
    return local.SubprocessRunner(use_venv=False)


def _run_pipeline(
    build_pipeline: Callable[[], Any], config: PipelineConfig, git_commit: str, error_file: Path, log_file: Path
) -> Any:
    """Run the pipeline on the initialised runner and return its outputs; a failing step's own
    message (the error file it writes) beats kfp's generic one."""
    previous = os.environ.get(ERROR_FILE_ENV)
    os.environ[ERROR_FILE_ENV] = str(error_file)
    try:
        return build_pipeline()(**config.to_arguments(), git_commit=git_commit).outputs
    except Exception as exc:
        if error_file.is_file():
            raise BertopsError(error_file.read_text(encoding="utf-8")) from exc
        raise BertopsError(f"pipeline failed: {exc} (full log: {log_file})") from exc
    finally:
        if previous is None:
            os.environ.pop(ERROR_FILE_ENV, None)
        else:
            os.environ[ERROR_FILE_ENV] = previous


def named_run(config: PipelineConfig, runner: str) -> tuple[PipelineConfig, PipelineConfig]:
    """The run as recorded (``config`` with a run name: its start time when none is given) and as it
    runs: when no ``checkpoint_dir`` is set, with the state directory's checkpoint folder, where a run
    started again under the same name finds them."""
    if not config.train.checkpoint_name:
        config = config.replace(checkpoint_name=run_records.new_run_name())
    # The docker runner's steps write as the images' user: their checkpoints stay beside the model,
    # which the step itself removes.
    if config.train.checkpoint_dir or runner != "subprocess":
        return config, config
    return config, config.replace(checkpoint_dir=str(run_records.checkpoints_root(config.registry.state_dir)))


def run_local(
    config: PipelineConfig, git_commit: str = "unknown", verbose: bool = False, runner: str = "subprocess"
) -> LocalRunResult:
    """Run the whole pipeline with ``config``; ``BertopsError`` names the failing step and why.

    Paths in ``config`` should be absolute: the tasks run in other processes (or containers).
    The tasks' full output goes to ``<state_dir>/runs/<time>.log``; the result says what the run
    produced, for the caller to report.
    """
    from kfp import local

    # Expected locally: the tasks run in this environment, not in their images (use_venv=False),
    # and resource requests only apply on a cluster.
    warnings.filterwarnings("ignore", message=".*custom or non-Python base image.*")
    warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")

    from pipelines.training_pipeline import build_pipeline, local_parallelism

    if runner not in RUNNERS:
        raise BertopsError(f"--runner must be one of {', '.join(RUNNERS)}, got {runner!r}")
    state_dir = Path(config.registry.state_dir)
    pipeline_root = state_dir / "pipeline_root"
    pipeline_root.mkdir(parents=True, exist_ok=True)
    log_file = state_dir / "runs" / time.strftime("%Y%m%d-%H%M%S.log")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    recorded, config = named_run(config, runner)
    run_records.write(recorded, run_records.RUNNING)
    log.info("run %s (log: %s)", config.train.checkpoint_name, log_file)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bertops-run-", dir=state_dir) as scratch,
            log_file.open("w", encoding="utf-8") as log_handle,
            contextlib.redirect_stdout(_StepLogFilter(log_handle, sys.stdout, verbose)),
            # A docker runner's tasks are containers, which the engine runs, not this process.
            tasks_die_with_this_process(state_dir) if runner == "subprocess" else contextlib.nullcontext(),
        ):
            task_runner = _task_runner(config, runner, state_dir, Path(scratch))
            local.init(runner=task_runner, pipeline_root=str(pipeline_root), raise_on_error=True)
            pipeline = functools.partial(build_pipeline, parallelism=local_parallelism())
            outputs = _run_pipeline(pipeline, config, git_commit, Path(scratch) / "error.txt", log_file)
    except BaseException:
        run_records.write(recorded, run_records.FAILED)
        fail_unfinished_runs(config.train.checkpoint_name, str(state_dir), config.registry.tracking_uri)
        raise
    finally:
        _drop_handlers_writing_to(_StepLogFilter)
    run_records.finish(recorded, config)
    return LocalRunResult(
        data_version=str(outputs["data_version"]),
        validation=str(outputs["validation"]),
        winner=str(outputs["winner"]),
        version=str(outputs["version"]),
        log_file=log_file,
    )
