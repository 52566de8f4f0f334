"""Local endpoints of the embedded runtime: one JSON record per running model server.

Records live in ``<state_dir>/endpoints/NAME.json`` and are written atomically; the server
itself is a detached process whose process group is signalled to stop it, or a container
(``bertops run --runner docker``) that the engine stops.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import requests

from bertops.errors import BertopsError
from bertops.private_state import private_dir, write_private


@dataclass
class Endpoint:
    """A model server started by the deploy step."""

    name: str
    url: str
    pid: int
    model_version: str
    model_dir: str
    log_file: str
    started_at: float
    # The model server's container id when it runs in a container (pid is then 0).
    container: str = ""

    @property
    def v1_predict_url(self) -> str:
        return f"{self.url}/v1/models/{self.name}:predict"

    @property
    def v2_infer_url(self) -> str:
        return f"{self.url}/v2/models/{self.name}/infer"

    @property
    def port(self) -> int:
        """The TCP port of ``url``."""
        return int(self.url.rsplit(":", 1)[1])

    def is_ready(self, timeout: float = 2.0) -> bool:
        """True when the server answers that the model is ready."""
        try:
            return requests.get(f"{self.url}/v2/models/{self.name}/ready", timeout=timeout).status_code == 200
        except requests.RequestException:
            return False


def endpoints_dir(state_dir: str | Path) -> Path:
    return Path(state_dir).resolve() / "endpoints"


def created_endpoints_dir(state_dir: str | Path) -> Path:
    """``endpoints_dir``, created owner-only (``bertops.private_state``) if it is missing."""
    return private_dir(endpoints_dir(state_dir), Path(state_dir).resolve())


def save(endpoint: Endpoint, state_dir: str | Path) -> None:
    """Write (or replace) an endpoint's record, readable by its owner only."""
    folder = created_endpoints_dir(state_dir)
    write_private(folder / f"{endpoint.name}.json", json.dumps(asdict(endpoint), indent=2), state_dir)


def list_endpoints(state_dir: str | Path) -> list[Endpoint]:
    """Every recorded endpoint, by name."""
    folder = endpoints_dir(state_dir)
    if not folder.is_dir():
        return []
    return [Endpoint(**json.loads(p.read_text(encoding="utf-8"))) for p in sorted(folder.glob("*.json"))]


def get(name: str, state_dir: str | Path) -> Endpoint:
    """The endpoint called ``name``; ``BertopsError`` if there is none."""
    path = endpoints_dir(state_dir) / f"{name}.json"
    if not path.is_file():
        known = ", ".join(e.name for e in list_endpoints(state_dir)) or "none"
        raise BertopsError(f"no local endpoint named {name!r} (known: {known})")
    return Endpoint(**json.loads(path.read_text(encoding="utf-8")))


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def stop_process(pid: int, grace_seconds: float = 15.0) -> None:
    """SIGTERM the server's process group (graceful shutdown), SIGKILL it after the grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline:
            try:
                # Reap it if it is our child, so it does not linger as a zombie.
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            except ChildProcessError:
                if not pid_alive(pid):
                    return
            time.sleep(0.1)


def stop(endpoint: Endpoint) -> None:
    """Stop the endpoint's server, a process or a container."""
    if endpoint.container:
        from bertops.containers import stop_container

        stop_container(endpoint.container)
    elif serves(endpoint):
        stop_process(endpoint.pid)


def serves(endpoint: Endpoint) -> bool:
    """True when the recorded pid is still this endpoint's model server.

    A record can outlive its server (a reboot, a kill -9); the pid may then belong to another
    process, whose process group must not be signalled.
    """
    try:
        argv = Path(f"/proc/{endpoint.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"serving.server" in argv and endpoint.model_dir.encode() in argv and pid_alive(endpoint.pid)


def running(endpoint: Endpoint) -> bool:
    """True while the endpoint's own server (its process or container) still runs."""
    if endpoint.container:
        from bertops.containers import container_running

        return container_running(endpoint.container)
    return serves(endpoint)


def delete(name: str, state_dir: str | Path) -> Endpoint:
    """Stop the endpoint's server and remove its record."""
    endpoint = get(name, state_dir)
    stop(endpoint)
    (endpoints_dir(state_dir) / f"{name}.json").unlink(missing_ok=True)
    return endpoint
