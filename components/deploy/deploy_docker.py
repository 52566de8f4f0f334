"""Deploy a registered model version as a container of the serving image on this machine.

What ``bertops run --runner docker`` ends with: the model files laid out as KServe's storage
initializer lays them (the registered directory's content at /mnt/models), and the server
started with the ServingRuntime's own command and arguments, bound to 127.0.0.1 on a free port
instead of 0.0.0.0:8080 (the container shares the host's network). As with the local target, the
new server must answer ready before the record switches to it and the old one is stopped.
"""

from __future__ import annotations

import logging
import time

from bertops import containers, endpoints
from bertops.endpoints import Endpoint
from bertops.errors import BertopsError
from bertops.registry import model_files
from components.deploy.deploy import LOOPBACK, free_port
from components.deploy.inference_service import (
    RUNTIME_MODEL_NAME,
    RUNTIME_MODEL_VERSION,
    SERVING_PORT,
    cpu_config,
    serving_runtime,
)

log = logging.getLogger(__name__)


def runtime_command(model_name: str, port: int, version: str = "") -> list[str]:
    """The ServingRuntime's container command and arguments for ``model_name`` ``version``, on loopback:``port``.

    KServe fills ``{{.Name}}`` with the InferenceService's name and the version template with its
    version label; the host and port are the only arguments changed, because a container on the
    host network must not bind every interface.
    """
    container = serving_runtime(cpu_config()).spec.containers[0]
    args = []
    for arg in container.args:
        arg = arg.replace(RUNTIME_MODEL_NAME, model_name).replace(RUNTIME_MODEL_VERSION, version)
        if arg.startswith("--host="):
            arg = f"--host={LOOPBACK}"
        elif arg == f"--http-port={SERVING_PORT}":
            arg = f"--http-port={port}"
        args.append(arg)
    return [*container.command, *args]


def deploy_docker(
    model_name: str,
    version: str,
    state_dir: str = ".bertops",
    tracking_uri: str = "",
    image: str = containers.CPU_IMAGE,
    timeout: float = 240.0,
) -> Endpoint:
    """Serve ``model_name`` version ``version`` from ``image`` on 127.0.0.1 and record the endpoint."""
    model_dir = model_files(model_name, version, state_dir, tracking_uri)
    engine = containers.client()
    try:
        previous: Endpoint | None = endpoints.get(model_name, state_dir)
    except BertopsError:
        previous = None
    port = free_port()
    log_file = endpoints.endpoints_dir(state_dir) / f"{model_name}.v{version}.log"
    container = containers.start_model_server(
        engine, image, runtime_command(model_name, port, version), model_dir, model_name, log_file
    )
    endpoint = Endpoint(
        name=model_name,
        url=f"http://{LOOPBACK}:{port}",
        pid=0,
        model_version=version,
        model_dir=str(model_dir),
        log_file=str(log_file),
        started_at=time.time(),
        container=str(container.id),
    )
    deadline = time.monotonic() + timeout
    while not endpoint.is_ready():
        if not containers.container_running(endpoint.container) or time.monotonic() > deadline:
            tail = containers.container_logs(endpoint.container, 3).strip().replace("\n", " | ")
            containers.stop_container(endpoint.container)
            raise BertopsError(f"model server container for {model_name!r} did not become ready: {tail}")
        time.sleep(0.5)
    endpoints.save(endpoint, state_dir)
    if previous is not None:
        endpoints.stop(previous)
    log.info("endpoint %s serves version %s at %s from %s", model_name, version, endpoint.url, image)
    return endpoint
