"""One writer at a time on a state directory: an exclusive lock file per model.

What changes what serves (moving the ``champion`` alias, switching the endpoint) must not
interleave between two ``bertops run`` or a run and ``bertops models promote`` on one state
directory. Each step runs in its own process, so no process can hold a lock from the gate to
the deploy: each of those steps takes this lock for its own short critical section, and the
compare-and-set rule of ``bertops.champion_lock`` makes the sections add up to a serial order.

The lock is ``flock`` on ``<state_dir>/locks/<model>.lock``: the kernel drops it when its holder
exits, ``kill -9`` included, so a crashed run never leaves the state directory locked. Who holds
it is written beside it (``.holder``) for the message a waiting run prints.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bertops.errors import BertopsError

log = logging.getLogger(__name__)

LOCKS_DIR = "locks"
# Long enough for another run's deploy (a model server's start and readiness, 180 s at most)
# and registration; a wait past this is a stuck holder, not a busy one.
DEFAULT_TIMEOUT = 1800.0


def lock_path(state_dir: str | Path, name: str) -> Path:
    """The lock file of model ``name`` in ``state_dir`` (the name made safe as a file name)."""
    return Path(state_dir).resolve() / LOCKS_DIR / f"{re.sub(r'[^A-Za-z0-9._-]', '_', name)}.lock"


def holder(path: Path) -> str:
    """Who holds (or last held) the lock at ``path``, as its holder wrote it."""
    try:
        return path.with_suffix(".holder").read_text(encoding="utf-8").strip() or "unknown"
    except OSError:
        return "unknown"


@contextmanager
def state_lock(state_dir: str | Path, name: str, what: str, timeout: float = DEFAULT_TIMEOUT) -> Iterator[None]:
    """Hold the exclusive lock of model ``name`` in ``state_dir`` while the block runs.

    ``what`` says what this process does under it (``register news v3``), for the message of a run
    that waits. A run that finds the lock taken logs that it waits and for whom; after ``timeout``
    seconds it fails with ``BertopsError`` naming the holder.
    """
    from filelock import FileLock, Timeout

    path = lock_path(state_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    # As private as the folder: a state directory that the docker runner opened to the images'
    # user gets a lock file that user can open too.
    lock = FileLock(str(path), mode=path.parent.stat().st_mode & 0o666, thread_local=False)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        log.warning("waiting for another bertops run (%s) that holds %s", holder(path), path)
        try:
            lock.acquire(timeout=timeout, poll_interval=0.2)
        except Timeout:
            raise BertopsError(
                f"gave up after {timeout:g}s waiting for another bertops run ({holder(path)}) that holds {path}; "
                "let it finish or stop it, then run again"
            ) from None
    try:
        path.with_suffix(".holder").write_text(f"pid {os.getpid()} on {socket.gethostname()}: {what}\n")
        yield
    finally:
        lock.release()
