"""Deploy a registered model version on the embedded runtime: a detached KServe server on loopback.

An endpoint keeps its URL from one version to the next: the new server is given the port in the
record. It loads its model while the old server still answers, reports that it waits for the
port, and binds it as soon as the old server, told to stop, has closed its listening socket (the
old one finishes its in-flight requests meanwhile). Connections are refused only between those
two moments. On a port of its own (a first deployment, or ``--serve-port`` set to another port)
the new server must answer ready before the record switches to it; only then is the older server
stopped, so a failed deployment leaves the previous one serving.

What answers is checked to be the server this step started: the server binds its socket itself
and reports the port it bound, with its pid, in a status file (``serving.listener``); with port 0
the kernel picks the port at that bind, so there is no gap between choosing and binding it. A
port that someone else holds fails the deployment with the server's own error line.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertops import endpoints
from bertops.endpoints import Endpoint
from bertops.errors import BertopsError
from bertops.inference_log import local_log_dir
from bertops.registry import model_files

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# How long a server that takes a port over waits for it once its model is loaded.
PORT_WAIT_S = 60.0


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """True when ``port`` on loopback can be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def inference_log_args(state_dir: str, name: str, rate: float, texts: bool) -> list[str]:
    """The server flags of a local endpoint's inference log (``bertops.inference_log.local_log_dir``); none at rate 0."""
    if rate <= 0:
        return []
    directory = local_log_dir(state_dir, name)
    return ["--log-inference-dir", str(directory), "--log-sample-rate", str(rate), "--log-texts", str(texts).lower()]


def start_server(
    model_dir: Path,
    name: str,
    version: str,
    port: int,
    log_file: Path,
    status_file: Path,
    port_wait_s: float = 0.0,
    extra_args: list[str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``serving.server`` for registry ``version`` detached from this process (own session, output to ``log_file``)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "serving.server",
                "--model-dir",
                str(model_dir),
                "--model-name",
                name,
                "--host",
                LOOPBACK,
                "--http-port",
                str(port),
                "--status-file",
                str(status_file),
                "--port-wait-s",
                str(port_wait_s),
                "--model-version",
                version,
                *(extra_args or []),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _message(line: str) -> str:
    """A log line's message: the ``message`` of a JSON line, the line itself otherwise."""
    try:
        entry = json.loads(line)
    except ValueError:
        return line
    return str(entry.get("message", line)) if isinstance(entry, dict) else line


def error_line(log_text: str) -> str:
    """The line of a server's log that says why it failed.

    An OS error (``[Errno 98] Address already in use``) first, else the last line logged at
    ERROR or an exception's summary (``ValueError: ...``), else the last line: the last line of
    a log is often a traceback frame or a shutdown message, not the cause.
    """
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    for line in lines:
        if "[Errno" in line:
            return _message(line)
    for line in reversed(lines):
        if '"level": "ERROR"' in line or " ERROR " in line or line.split(":", 1)[0].endswith(("Error", "Exception")):
            return _message(line)
    return _message(lines[-1]) if lines else "(nothing in its log)"


@dataclass
class Launch:
    """A model server this step started: its process, its status file, and its log from ``log_offset`` on."""

    name: str
    version: str
    process: subprocess.Popen[bytes]
    status_file: Path
    log_file: Path
    log_offset: int

    def status(self) -> dict[str, Any]:
        """What the server reported in its status file; ``{}`` before it did (or if another process wrote it)."""
        try:
            status = json.loads(self.status_file.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}
        return status if isinstance(status, dict) and status.get("pid") == self.process.pid else {}

    def failure(self) -> str:
        """Why the server exited: its exit code and the line of its log that says why."""
        with self.log_file.open("rb") as log_handle:
            log_handle.seek(self.log_offset)
            text = log_handle.read().decode(errors="replace")
        return f"model server for {self.name!r} exited with {self.process.returncode}: {error_line(text)}"


def wait_ready(launch: Launch, timeout: float, predecessor: Endpoint | None = None) -> int:
    """Block until the server ``launch`` started listens and answers ready; return its port.

    ``predecessor`` holds the port the new server waits for: it is stopped once the new server
    has loaded its model. ``BertopsError`` with the server's error line if it exits, or on timeout.
    """
    deadline = time.monotonic() + timeout
    stopped = ""
    while time.monotonic() < deadline:
        if launch.process.poll() is not None:
            raise BertopsError(launch.failure() + stopped)
        status = launch.status()
        if status.get("state") == "waiting-for-port" and predecessor is not None:
            log.info("version %s loaded; version %s hands its port over", launch.version, predecessor.model_version)
            endpoints.stop(predecessor)
            stopped = f" (version {predecessor.model_version}, which held the port, was stopped)"
            predecessor = None
        port = int(status.get("port") or 0) if status.get("state") == "listening" else 0
        # The server holds its listening socket on this port: whatever answers there is this server.
        probe = Endpoint(launch.name, f"http://{LOOPBACK}:{port}", launch.process.pid, "", "", "", 0.0)
        if port and probe.is_ready() and launch.process.poll() is None:
            return port
        time.sleep(0.2)
    endpoints.stop_process(launch.process.pid)
    raise BertopsError(f"model server for {launch.name!r} not ready after {timeout:.0f}s (log: {launch.log_file})")


def choose_port(previous: Endpoint | None, requested: int) -> tuple[int, Endpoint | None]:
    """The port for the new server, and the running server it takes that port over from (if any).

    The recorded port keeps the endpoint's URL; ``requested`` (``--serve-port``) wins when set.
    """
    recorded = previous.port if previous is not None else 0
    if requested and requested != recorded:
        return requested, None
    if previous is not None and endpoints.running(previous):
        return recorded, previous
    if requested:
        return requested, None
    # The recorded server is gone (a reboot): its port if nobody took it, else any free one.
    return (recorded if recorded and port_is_free(recorded) else 0), None


def deploy_local(
    model_name: str,
    version: str,
    state_dir: str = ".bertops",
    tracking_uri: str = "",
    port: int = 0,
    timeout: float = 180.0,
    log_rate: float = 1.0,
    log_texts: bool = True,
) -> Endpoint:
    """Serve ``model_name`` version ``version`` from the registry on 127.0.0.1 and record the endpoint.

    ``port`` 0 keeps the port of the endpoint's record, or takes a free one for a new endpoint.
    The server logs ``log_rate`` of the texts it answers (with the texts, or only their hashes
    and lengths) to the state directory's inference log, which ``bertops monitor`` reads.
    """
    model_dir = model_files(model_name, version, state_dir, tracking_uri)
    try:
        previous: Endpoint | None = endpoints.get(model_name, state_dir)
    except BertopsError:
        previous = None
    port, predecessor = choose_port(previous, port)
    folder = endpoints.created_endpoints_dir(state_dir)
    log_file = folder / f"{model_name}.v{version}.log"
    handle, status_path = tempfile.mkstemp(prefix=f".{model_name}.", suffix=".status", dir=folder)
    os.close(handle)
    status_file = Path(status_path)
    try:
        log_offset = log_file.stat().st_size if log_file.exists() else 0
        wait_s = PORT_WAIT_S if predecessor is not None else 0.0
        extra = inference_log_args(state_dir, model_name, log_rate, log_texts)
        process = start_server(model_dir, model_name, version, port, log_file, status_file, wait_s, extra)
        launch = Launch(model_name, version, process, status_file, log_file, log_offset)
        port = wait_ready(launch, timeout, predecessor)
    finally:
        status_file.unlink(missing_ok=True)
    endpoint = Endpoint(
        name=model_name,
        url=f"http://{LOOPBACK}:{port}",
        pid=process.pid,
        model_version=version,
        model_dir=str(model_dir),
        log_file=str(log_file),
        started_at=time.time(),
    )
    endpoints.save(endpoint, state_dir)
    if previous is not None and previous.pid != endpoint.pid:
        endpoints.stop(previous)
    log.info("endpoint %s serves version %s at %s", model_name, version, endpoint.url)
    return endpoint
