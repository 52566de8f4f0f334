"""Deploy a registered model version on the embedded runtime: a detached KServe server on loopback.

The new server must answer ready before the endpoint record switches to it; only then is an
older server of the same name stopped, so a failed deployment leaves the previous one serving.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

from bertops import endpoints
from bertops.endpoints import Endpoint
from bertops.errors import BertopsError
from bertops.registry import model_files

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def start_server(model_dir: Path, name: str, port: int, log_file: Path, version: str = "") -> subprocess.Popen[bytes]:
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
                "--model-version",
                version,
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_ready(endpoint: Endpoint, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Block until the endpoint is ready; ``BertopsError`` with the log's tail if it dies or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if endpoint.is_ready():
            return
        if process.poll() is not None:
            tail = Path(endpoint.log_file).read_text(errors="replace").strip().splitlines()[-1:]
            raise BertopsError(f"model server for {endpoint.name!r} exited with {process.returncode}: {' '.join(tail)}")
        time.sleep(0.5)
    endpoints.stop_process(process.pid)
    raise BertopsError(f"model server for {endpoint.name!r} not ready after {timeout:.0f}s (log: {endpoint.log_file})")


def deploy_local(
    model_name: str,
    version: str,
    state_dir: str = ".bertops",
    tracking_uri: str = "",
    port: int = 0,
    timeout: float = 180.0,
) -> Endpoint:
    """Serve ``model_name`` version ``version`` from the registry on 127.0.0.1 and record the endpoint."""
    model_dir = model_files(model_name, version, state_dir, tracking_uri)
    try:
        previous: Endpoint | None = endpoints.get(model_name, state_dir)
    except BertopsError:
        previous = None
    if previous is not None and port and previous.url.endswith(f":{port}"):
        # Same fixed port: the old server must give it up first.
        endpoints.stop(previous)
        previous = None
    port = port or free_port()
    log_file = endpoints.endpoints_dir(state_dir) / f"{model_name}.v{version}.log"
    process = start_server(model_dir, model_name, port, log_file, version)
    endpoint = Endpoint(
        name=model_name,
        url=f"http://{LOOPBACK}:{port}",
        pid=process.pid,
        model_version=version,
        model_dir=str(model_dir),
        log_file=str(log_file),
        started_at=time.time(),
    )
    wait_ready(endpoint, process, timeout)
    endpoints.save(endpoint, state_dir)
    if previous is not None and previous.pid != endpoint.pid:
        endpoints.stop(previous)
    log.info("endpoint %s serves version %s at %s", model_name, version, endpoint.url)
    return endpoint
