"""Local state is private to its owner: the state directory 0700, the registry and endpoint records 0600.

The registry database holds every run's parameters (a tracking URI among them) and the endpoint
records name the servers' processes; other local users have no business reading either. Folders
and files bertops creates get these modes from the start, and existing ones from older versions
(0755, 0644) are tightened when bertops opens them.

One exception, on purpose: ``bertops run --runner docker`` opens the state directory to the
image's user (UID 10001), who writes the registry and the artifacts from inside the containers,
by making it writable by all (``o+w``). A state directory open like that is shared: bertops
leaves its modes and creates files in it with the usual ones, so the host and the image's user
keep reading each other's files. ``chmod -R go-rwx`` makes it private again.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def is_shared(state_dir: str | Path) -> bool:
    """True when the state directory is writable by all: opened for the docker runner's image user."""
    try:
        return bool(Path(state_dir).stat().st_mode & 0o002)
    except FileNotFoundError:
        return False


def _tighten(path: Path, mode: int) -> None:
    """``chmod path mode`` if it is ours and more open than ``mode`` (someone else's is left alone)."""
    status = path.stat()
    if status.st_uid == os.geteuid() and status.st_mode & 0o777 & ~mode:
        path.chmod(mode)


def private_dir(path: str | Path, state_dir: str | Path) -> Path:
    """Create ``path`` (a folder in ``state_dir``, or the state directory itself) owner-only, and
    tighten it and the state directory if they are older and open; nothing changes in a shared one."""
    path, state = Path(path), Path(state_dir)
    if is_shared(state):
        path.mkdir(parents=True, exist_ok=True)
        return path
    state.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    for folder in {state, path}:
        _tighten(folder, PRIVATE_DIR)
    return path


def private_file(path: str | Path, state_dir: str | Path) -> Path:
    """Create ``path`` empty and owner-only if it is missing, or tighten it; nothing changes in a shared state dir."""
    path = Path(path)
    if is_shared(state_dir):
        return path
    # O_CREAT with the mode: the file is never readable by others, not even for a moment.
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE))
    _tighten(path, PRIVATE_FILE)
    return path


def write_private(path: str | Path, text: str, state_dir: str | Path) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file renamed over it), owner-only unless shared."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    mode = 0o666 if is_shared(state_dir) else PRIVATE_FILE
    tmp.unlink(missing_ok=True)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "w", encoding="utf-8") as out:
        out.write(text)
    tmp.replace(path)
