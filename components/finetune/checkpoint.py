"""Atomic training checkpoints: a run killed at any instant leaves either the old or the new one.

A checkpoint is a directory ``step-00000040/`` holding one ``state.pt`` (model, optimizer,
scheduler, grad scaler, every rank's RNG state, data position, history). It is written under a
temporary name, flushed to disk, and renamed into place; readers only ever see complete
directories, so the newest ``step-*`` is always safe to resume from. Leftover temporary
directories (a writer killed mid-write) are removed by the next writer.

``save_run`` and ``resume_run`` say what a training run's checkpoint holds and put it back.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertops.device import precision_name
from bertops.errors import BertopsError
from components.finetune.distributed import all_gather

if TYPE_CHECKING:
    from components.finetune.finetune import TrainingRun

log = logging.getLogger(__name__)

PREFIX = "step-"
STATE_FILE = "state.pt"
BEST_DIR = "best"
BEST_FILE = "model.pt"
TMP_PREFIX = ".tmp-"


def _fsync_dir(directory: Path) -> None:
    # A rename is durable only once the directory entry itself is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _torch_save(obj: Any, path: Path) -> None:
    import torch

    with path.open("wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())


def _write_atomically(directory: Path, name: str, write: Callable[[Path], None]) -> Path:
    """Create ``directory/name`` through ``write(tmp_dir)`` and a rename; an older one is replaced."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = directory / f"{TMP_PREFIX}{name}-{os.getpid()}"
    tmp.mkdir()
    write(tmp)
    final = directory / name
    if final.exists():
        # os.rename cannot replace a non-empty directory: move the old one aside first. A kill
        # between the two renames leaves the old one under a temporary name, which the next
        # writer removes; the previous step's checkpoint is still there to resume from.
        old = directory / f"{TMP_PREFIX}old-{name}-{os.getpid()}"
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)
    _fsync_dir(directory)
    return final


def checkpoint_steps(directory: Path) -> list[int]:
    """Steps of the complete checkpoints in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    steps = []
    for path in directory.glob(f"{PREFIX}*"):
        suffix = path.name.removeprefix(PREFIX)
        if suffix.isdigit() and (path / STATE_FILE).is_file():
            steps.append(int(suffix))
    return sorted(steps)


def save(directory: Path, step: int, state: dict[str, Any], keep: int = 1) -> Path:
    """Write the checkpoint of ``step`` atomically, then remove all but the newest ``keep``."""
    path = _write_atomically(directory, f"{PREFIX}{step:08d}", lambda tmp: _torch_save(state, tmp / STATE_FILE))
    for old in checkpoint_steps(directory)[:-keep]:
        shutil.rmtree(directory / f"{PREFIX}{old:08d}", ignore_errors=True)
    return path


def load_latest(directory: Path) -> dict[str, Any] | None:
    """The newest complete checkpoint's state (tensors on the CPU), or None when there is none."""
    steps = checkpoint_steps(directory)
    if not steps:
        return None
    return _torch_load(directory / f"{PREFIX}{steps[-1]:08d}" / STATE_FILE)


def save_best(directory: Path, model_state: dict[str, Any]) -> None:
    """Keep ``model_state`` as the best weights so far (replacing the previous best atomically)."""
    _write_atomically(directory, BEST_DIR, lambda tmp: _torch_save(model_state, tmp / BEST_FILE))


def load_best(directory: Path) -> dict[str, Any] | None:
    """The best weights saved by ``save_best``, or None."""
    path = directory / BEST_DIR / BEST_FILE
    return _torch_load(path) if path.is_file() else None


def _torch_load(path: Path) -> dict[str, Any]:
    import torch

    # weights_only: a checkpoint is data (tensors, numbers, strings), never code to run.
    return dict(torch.load(path, map_location="cpu", weights_only=True))


# --- a training run's checkpoint: what it holds, and putting it back ----------------------------

# Bumped when the content of a checkpoint changes in a way older code cannot read.
FORMAT = 1


def fingerprint(run: TrainingRun) -> dict[str, Any]:
    """The settings a checkpoint of ``run`` is only valid for."""
    c = run.config
    return {
        "base_model": c.base_model,
        "batch_size": c.batch_size,
        "grad_accumulation": c.grad_accumulation,
        "seed": c.seed,
        "total_steps": run.total_steps,
        "learning_rate": c.learning_rate,
        "warmup_ratio": c.warmup_ratio,
        "weight_decay": c.weight_decay,
        "world_size": run.ctx.world_size,
        "train_rows": len(run.train_ids),
        # Resolved, not as asked: "auto" is bf16 on one GPU and fp16 on another, and an fp16
        # run cannot take a bf16 run's (empty) grad scaler state.
        "precision": precision_name(run.amp),
    }


def rank_state(run: TrainingRun) -> dict[str, Any]:
    """This rank's part of a checkpoint: its RNG streams and its training loss since the last evaluation."""
    import torch

    state: dict[str, Any] = {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "loss_sum": float(run.loss_sum),
        "loss_count": run.loss_count,
    }
    if run.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(run.device)
    return state


def save_run(run: TrainingRun) -> None:
    """Checkpoint ``run`` at its current step (every rank calls this; rank 0 writes)."""
    ranks = all_gather(rank_state(run), run.ctx)
    if not run.ctx.is_main:
        return
    state = {
        "format": FORMAT,
        "fingerprint": fingerprint(run),
        "step": run.step,
        "epoch": run.epoch,
        "epoch_step": run.epoch_step,
        "samples_seen": run.samples_seen,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "ranks": ranks,
        "history": run.history,
        "early_stopping": [run.best_accuracy, run.best_step, run.bad_evals, run.stopped],
    }
    path = save(run.checkpoint_dir, run.step, state, run.config.keep_checkpoints)
    log.info("checkpoint: step %d -> %s", run.step, path)


def resume_run(run: TrainingRun) -> int:
    """Load the newest checkpoint into ``run``, if there is one; returns its step (0 for a fresh start)."""
    state = load_latest(run.checkpoint_dir)
    if state is None:
        return 0
    expected = fingerprint(run)
    if state.get("format") != FORMAT or state["fingerprint"] != expected:
        changed = sorted(k for k, v in expected.items() if state.get("fingerprint", {}).get(k) != v) or ["format"]
        raise BertopsError(
            f"{run.checkpoint_dir} holds a checkpoint of a run with other settings ({', '.join(changed)}); "
            "use another output location or checkpoint_dir, or delete it to start afresh"
        )
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    run.step, run.epoch, run.epoch_step = state["step"], state["epoch"], state["epoch_step"]
    run.samples_seen = state["samples_seen"]
    run.history = list(state["history"])
    best, best_step, bad, stopped = state["early_stopping"]
    run.best_accuracy, run.best_step, run.bad_evals, run.stopped = float(best), int(best_step), int(bad), bool(stopped)
    _restore_rank(run, state["ranks"][run.ctx.rank])
    if run.ctx.is_main:
        log.info("resuming from %s at step %d of %d", run.checkpoint_dir, run.step, run.total_steps)
    return run.step


def _restore_rank(run: TrainingRun, mine: dict[str, Any]) -> None:
    """Put back this rank's RNG streams and loss accumulator, as ``rank_state`` saved them."""
    import torch

    random.setstate(mine["python"])
    torch.set_rng_state(mine["torch"])
    if "cuda" in mine and run.device.type == "cuda":
        torch.cuda.set_rng_state(mine["cuda"], run.device)
    run.loss_sum.fill_(float(mine["loss_sum"]))
    run.loss_count = int(mine["loss_count"])
