"""What a training run tells its operator: a progress bar on a terminal, log lines in a pipeline task."""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

from bertops.training_progress import TrainingProgress

if TYPE_CHECKING:
    from components.finetune.finetune import TrainingRun, TrainResult

log = logging.getLogger(__name__)


class Progress:
    """Reports a run's steps: a tqdm bar on a terminal; in a pipeline task (no TTY) a log line every tenth
    of the run (``bertops.training_progress``: step, loss, samples/s and ETA), which ``bertops run`` draws
    as the candidate's progress line."""

    def __init__(self, run: TrainingRun) -> None:
        from tqdm import tqdm

        self.run = run
        self.interactive = sys.stderr.isatty() and run.ctx.is_main
        self.log_every = max(1, run.total_steps // 10)
        # The ETA is wall time, evaluations and checkpoints included, at this invocation's pace.
        self.started, self.first_step = time.perf_counter(), run.step
        self.bar: Any = tqdm(
            total=run.total_steps,
            initial=run.step,
            desc="finetune",
            unit="step",
            mininterval=2.0,
            disable=not self.interactive,
        )

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.bar.close()

    def step_done(self, last: bool) -> None:
        """After an optimizer step: advance the bar, and read the loss back when it is time to show it.

        Every step on CPUs; on GPUs reading the loss waits for the device, so only a tenth of the
        time. Every rank takes the same branch at the same steps (the loss is all-reduced).
        """
        run = self.run
        self.bar.update()
        due = run.step % self.log_every == 0 or last
        if run.device.type == "cuda" and not due:
            return
        run.clock.stop()
        loss = run.mean_loss()
        rate = run.samples_done * run.ctx.world_size / run.clock.seconds
        self.bar.set_postfix(loss=f"{loss:.3f}", samples_per_s=f"{rate:.1f}")
        if run.ctx.is_main and not self.interactive and due:
            done = run.step - self.first_step
            eta = (time.perf_counter() - self.started) / done * (run.total_steps - run.step) if done else None
            log.info("%s", TrainingProgress(run.step, run.total_steps, loss, rate, eta).message())


def log_evaluation(run: TrainingRun, entry: dict[str, float]) -> None:
    """One line per evaluation, from rank 0."""
    if run.ctx.is_main:
        log.info(
            "eval step %d: train loss %.4f, validation loss %.4f, accuracy %.4f%s",
            run.step,
            entry["train_loss"],
            entry["val_loss"],
            entry["val_accuracy"],
            f" (no better for {run.bad_evals}: stopping early)" if run.stopped else "",
        )


def log_finished(run: TrainingRun, result: TrainResult, best_exported: bool) -> None:
    """The run's summary line."""
    log.info(
        "trained %d steps (%d samples) in %.0fs on %s x%d: %.1f samples/s, final loss %.3f, validation accuracy %.3f%s",
        run.step,
        run.samples_seen,
        result.train_seconds,
        run.device,
        run.ctx.world_size,
        result.samples_per_second,
        result.final_train_loss,
        result.validation_accuracy,
        f" (best of step {run.best_step})" if best_exported else "",
    )
