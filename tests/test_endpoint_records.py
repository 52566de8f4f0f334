"""`bertops endpoints delete` signals only the model server a record names, never a process that
took over its pid after the server died (a reboot, a kill -9)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from bertops import endpoints
from bertops.endpoints import Endpoint


def _record(state: Path, pid: int, model_dir: Path) -> None:
    endpoints.save(
        Endpoint("news", "http://127.0.0.1:9", pid, "1", str(model_dir), str(state / "news.log"), time.time()),
        state,
    )


def _sleeper(*argv: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", *argv], start_new_session=True)
    deadline = time.monotonic() + 30
    while b"time.sleep" not in Path(f"/proc/{process.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)
    return process


def test_delete_leaves_a_process_that_is_not_the_recorded_server(tmp_path: Path) -> None:
    stranger = _sleeper()
    try:
        _record(tmp_path, stranger.pid, tmp_path / "model")
        endpoints.delete("news", tmp_path)
        assert stranger.poll() is None, "an unrelated process with the recorded pid was signalled"
        assert endpoints.list_endpoints(tmp_path) == []
    finally:
        stranger.kill()
        stranger.wait()


def test_delete_stops_the_recorded_server(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    server = _sleeper("serving.server", "--model-dir", str(model_dir))
    try:
        _record(tmp_path, server.pid, model_dir)
        endpoints.delete("news", tmp_path)
        assert server.wait(timeout=30) is not None
        assert endpoints.list_endpoints(tmp_path) == []
    finally:
        if server.poll() is None:
            server.kill()
