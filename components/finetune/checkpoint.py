"""Atomic training checkpoints: a run killed at any instant leaves either the old or the new one.

A checkpoint is a directory ``step-00000040/`` holding one ``state.pt`` (model, optimizer,
scheduler, grad scaler, every rank's RNG state, data position, history). It is written under a
temporary name, flushed to disk, and renamed into place; readers only ever see complete
directories, so the newest ``step-*`` is always safe to resume from. Leftover temporary
directories (a writer killed mid-write) are removed by the next writer.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
