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
import re
import shutil
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from bertops.config import PipelineConfig
from bertops.errors import BertopsError
from bertops.redact import redact_credentials
from bertops.step import ERROR_FILE_ENV
from bertops.tracking import fail_unfinished_runs
from bertops.training_progress import TrainingProgress, format_eta
from bertops.training_progress import parse as parse_progress
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


# Executor and third-party chatter that the full log keeps but the terminal does not need.
_NOISE = (
    "Got executor_input",
    "Looking for component",
    "Loading KFP component",
    "Wrote executor output",
    "Skipping registering",
    "RuntimeWarning",
    "warnings.warn(",
    "Streamed logs",
    # Great Expectations' ephemeral context, matplotlib's first run on a machine.
    "for ephemeral docs site",
    "Matplotlib is building the font cache",
)
# kfp.local's orchestrator logs its bookkeeping on the root logger: how it resolves each loop
# item's fields, a condition that skips a task, the removal of its workspace.
_ORCHESTRATOR_CHATTER = (
    "Applying expression selector",
    "After expression selector",
    "Skipping conditional task",
    "Cleaned up workspace",
)
# Colour and cursor escape sequences (kfp.local colours task names and statuses).
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def strip_ansi(text: str) -> str:
    """``text`` without terminal escape sequences: what a log file holds."""
    return _ANSI.sub("", text)


class ProgressBoard:
    """One progress line per fine-tuning candidate, prefixed with its id: on a terminal the lines are
    redrawn in place below the other output; elsewhere (a pipe, CI) each report is printed as it comes.
    """

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self.live = out.isatty()
        self._lines: dict[str, TrainingProgress] = {}
        self._drawn = 0

    def print(self, line: str) -> None:
        """A line of other output, above the progress lines."""
        self._erase()
        self._out.write((line if self.live else strip_ansi(line)) + "\n")
        self._draw()

    def update(self, progress: TrainingProgress) -> None:
        """Show a candidate's progress; once every candidate shown has finished, its lines stay as printed."""
        if not self.live:
            self._out.write(self.render(progress) + "\n")
            return
        self._erase()
        self._lines[progress.tag] = progress
        self._draw()
        if all(p.step >= p.total for p in self._lines.values()):
            self._lines, self._drawn = {}, 0

    def render(self, progress: TrainingProgress, width: int = 0) -> str:
        """``finetune base  [#####.....]  30/60  loss 0.8123  41.7 samples/s  ETA 1:05``."""
        filled = round(20 * progress.step / max(progress.total, 1))
        name = f"finetune {progress.tag}" if progress.tag else "finetune"
        return (
            f"{name:<{width}}  [{'#' * filled}{'.' * (20 - filled)}] {progress.step:>{len(str(progress.total))}}"
            f"/{progress.total}  loss {progress.loss:.4f}  {progress.samples_per_second:.1f} samples/s  "
            f"ETA {format_eta(progress.eta_seconds)}"
        )

    def _columns(self) -> int:
        """The width of the terminal the board draws on (not necessarily this process's stdout)."""
        try:
            columns = os.get_terminal_size(self._out.fileno()).columns
        except (AttributeError, OSError, ValueError):
            columns = 0
        return columns or shutil.get_terminal_size((120, 24)).columns

    def _draw(self) -> None:
        columns = self._columns() - 1
        width = max((len(f"finetune {tag}") for tag in self._lines), default=0)
        for progress in self._lines.values():
            # Never wider than the terminal: a wrapped line would throw off the erasing.
            self._out.write(self.render(progress, width)[:columns] + "\n")
        self._drawn = len(self._lines)
        self._out.flush()

    def _erase(self) -> None:
        self._out.write("\x1b[1A\x1b[2K" * self._drawn)
        self._drawn = 0


class _StepLogFilter(io.TextIOBase):
    """Everything the tasks print goes to the run's log file (without colour codes); the terminal
    gets the steps' own log lines (results, errors) without the executor's JSON dumps and
    third-party chatter, and each candidate's training progress as one line (``ProgressBoard``).

    Both get whole lines with the credentials of URLs masked (``bertops.redact``): the executor
    prints every task input, a tracking URI with a token among them. A line is written once its
    newline arrives, so a URL split over two writes is still masked. Parallel tasks print from
    their own threads, hence the lock.
    """

    def __init__(self, log: TextIO, terminal: TextIO, verbose: bool):
        self._log, self._verbose = log, verbose
        self.board = ProgressBoard(terminal)
        self._buffer = ""
        self._lock = threading.RLock()

    def write(self, text: str) -> int:
        with self._lock:
            self._buffer += text
            *lines, self._buffer = self._buffer.split("\n")
            for line in map(redact_credentials, lines):
                self._write_line(line)
            self.flush()
        return len(text)

    def _write_line(self, line: str) -> None:
        plain = strip_ansi(line)
        self._log.write(plain + "\n")
        if self._verbose:
            self.board.print(line)
            return
        progress = parse_progress(plain)
        if progress is not None:
            self.board.update(progress)
            return
        step_line = "[KFP Executor" in line or "Executing task" in line or "finished with status" in line
        if step_line and not any(n in line for n in _NOISE):
            # Parallel tasks indent each other's lines (kfp.local swaps print for an indenting one).
            self.board.print(line.lstrip())

    def log_only(self, record: logging.LogRecord) -> bool:
        """A logging filter for the root logger: kfp.local's orchestrator chatter goes to the log file only."""
        message = record.getMessage()
        if self._verbose or not message.startswith(_ORCHESTRATOR_CHATTER):
            return True
        with self._lock:
            self._log.write(strip_ansi(redact_credentials(message)) + "\n")
        return False

    def flush(self) -> None:
        self._log.flush()


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


@contextlib.contextmanager
def _terminal_filtered(log_handle: TextIO, verbose: bool) -> Iterator[_StepLogFilter]:
    """While the pipeline runs, this process's stdout (where kfp.local prints the tasks' output) and
    the root logger's records (kfp.local's own) pass through a ``_StepLogFilter``."""
    step_log = _StepLogFilter(log_handle, sys.stdout, verbose)
    root = logging.getLogger()
    root.addFilter(step_log.log_only)
    try:
        with contextlib.redirect_stdout(step_log):
            yield step_log
    finally:
        root.removeFilter(step_log.log_only)


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
    config: PipelineConfig,
    git_commit: str = "unknown",
    verbose: bool = False,
    runner: str = "subprocess",
    parallelism: int = 0,
) -> LocalRunResult:
    """Run the whole pipeline with ``config``; ``BertopsError`` names the failing step and why.

    Paths in ``config`` should be absolute: the tasks run in other processes (or containers).
    The tasks' full output goes to ``<state_dir>/runs/<time>.log``; the result says what the run
    produced, for the caller to report. ``parallelism``: candidates fine-tuned at once (0: one per CPU).
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
            _terminal_filtered(log_handle, verbose),
            # A docker runner's tasks are containers, which the engine runs, not this process.
            tasks_die_with_this_process(state_dir) if runner == "subprocess" else contextlib.nullcontext(),
        ):
            task_runner = _task_runner(config, runner, state_dir, Path(scratch))
            local.init(runner=task_runner, pipeline_root=str(pipeline_root), raise_on_error=True)
            pipeline = functools.partial(build_pipeline, parallelism=local_parallelism(parallelism))
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
