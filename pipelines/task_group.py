"""The tasks of a local run die with the process that runs it, however that process ends.

``kfp.local``'s subprocess runner starts each task as a child of the run's process; a ``kill -9``
of that process left the tasks running on their own (a register step moved the champion after
the run was gone). Here a small guard process leads a process group of its own, every task is
started in that group (with all its children: DataLoader workers, a torchrun), and the guard
holds the read end of a pipe whose only writer is the run's process. The kernel closes that
pipe when the run's process ends, for any reason; the guard then kills the whole group.

The model server the deploy step starts is detached (its own session) and outlives the run on
purpose. A run killed while that server starts (before the deploy step recorded it) would leave
a server nobody knows about: every process started under the guard carries ``GUARD_ENV`` in its
environment, and once the group is dead the guard also kills each process carrying this run's
token whose pid no endpoint record names.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

from bertops import endpoints

# This run's token in the environment of every process it starts (tasks and what they start).
GUARD_ENV = "BERTOPS_RUN_GUARD"
# How long the guard waits for the killed tasks to be gone before it looks for unrecorded servers.
GROUP_EXIT_WAIT_S = 10.0


def _run_subprocess_in_group(group: int) -> Callable[[list[str], dict[str, str] | None], int]:
    """kfp's ``run_local_subprocess``, with the task started in process group ``group``."""

    def run_local_subprocess(full_command: list[str], env_vars: dict[str, str] | None = None) -> int:
        env = {**os.environ, **env_vars} if env_vars else None
        # As kfp does: the task's output, line by line, to this process's stdout (the run's log).
        with subprocess.Popen(
            full_command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env=env,
            process_group=group,
        ) as process:
            assert process.stdout is not None
            for line in iter(process.stdout.readline, ""):
                print(line, end="")
            print("\n")
            return process.wait()

    return run_local_subprocess


@contextlib.contextmanager
def tasks_die_with_this_process(state_dir: Path) -> Iterator[int]:
    """While open, kfp.local's subprocess tasks run in a group that dies with this process; yields the group.

    Ctrl-C still stops the tasks (they are no longer in the terminal's foreground group, so the
    interrupt is passed on to them), and leaving the block normally leaves a recorded model server
    running. Whatever else this run started and did not record is killed once the block is left.
    """
    from kfp.local import subprocess_task_handler

    token = uuid.uuid4().hex
    guard = subprocess.Popen(
        [sys.executable, "-m", "pipelines.task_group", str(state_dir), token],
        stdin=subprocess.PIPE,
        process_group=0,
    )
    kfp_run = subprocess_task_handler.run_local_subprocess
    previous_env = os.environ.get(GUARD_ENV)
    os.environ[GUARD_ENV] = token
    subprocess_task_handler.run_local_subprocess = _run_subprocess_in_group(guard.pid)
    try:
        with _interrupts_passed_to(guard.pid):
            yield guard.pid
    finally:
        subprocess_task_handler.run_local_subprocess = kfp_run
        if previous_env is None:
            os.environ.pop(GUARD_ENV, None)
        else:
            os.environ[GUARD_ENV] = previous_env
        assert guard.stdin is not None
        guard.stdin.close()
        guard.wait()


@contextlib.contextmanager
def _interrupts_passed_to(group: int) -> Iterator[None]:
    """Ctrl-C reaches only the terminal's foreground group: pass it on to the tasks, then stop here."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGINT)
        signal.default_int_handler(signum, frame)

    try:
        previous = signal.signal(signal.SIGINT, interrupt)
    except ValueError:  # not the main thread: no handler can be set, and none is needed there
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _wait_group_gone(group: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def processes_with_token(token: str) -> list[int]:
    """Pids of the live processes whose environment holds this run's ``GUARD_ENV`` (Linux /proc; else none)."""
    needle = f"{GUARD_ENV}={token}".encode()
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            environment = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or another user's
            continue
        if needle in environment.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def kill_unrecorded(state_dir: Path, token: str, run_pid: int) -> list[int]:
    """Kill (with their groups) the processes of this run that no endpoint record names; returns their pids."""
    # The run's own process set the token after it started, so its /proc environ lacks it: excluded anyway.
    spared = {endpoint.pid for endpoint in endpoints.list_endpoints(state_dir)} | {os.getpid(), run_pid}
    killed = []
    for pid in processes_with_token(token):
        if pid in spared:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            # A detached server leads its own group; its workers go with it.
            os.killpg(pid, signal.SIGKILL) if os.getpgid(pid) == pid else os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def guard(state_dir: Path, token: str) -> None:
    """The guard process: wait for the run's end (end of stdin), then kill the tasks and the unrecorded."""
    # The run passes Ctrl-C on to the whole group, this process included: the tasks stop, the guard stays.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    run_pid = os.getppid()
    sys.stdin.buffer.read()
    group = os.getpgrp()
    finisher = os.fork()
    if finisher == 0:
        os.setpgid(0, 0)  # out of the group that is about to be killed
        _wait_group_gone(group, GROUP_EXIT_WAIT_S)
        for pid in kill_unrecorded(state_dir, token, run_pid):
            print(f"bertops: stopped process {pid}, started by a run that ended before recording it", file=sys.stderr)
        os._exit(0)
    # Both sides set it, so the kill below cannot reach the finisher whichever runs first.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.setpgid(finisher, finisher)
    os.killpg(group, signal.SIGKILL)


if __name__ == "__main__":
    guard(Path(sys.argv[1]), sys.argv[2])
