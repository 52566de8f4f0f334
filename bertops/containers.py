"""The container engine on one machine: images of the pipeline and model servers in containers.

Used by ``bertops run --runner docker`` (every step in its image through ``kfp.local``'s
DockerRunner, then the winner served from the serving image) and by ``bertops endpoints`` for
endpoints that are containers. Containers use the host network: the engines these machines can
run have no bridge, and the model server binds 127.0.0.1 so it stays on loopback.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertops.errors import BertopsError
from bertops.images import CPU_IMAGE, CUDA_IMAGE

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)

# The images' non-root user (docker/*.Dockerfile): steps run as it, as in a pod with runAsNonRoot.
IMAGE_USER = "10001:10001"
TITLE_LABEL = "org.opencontainers.image.title"
# Where KServe's storage initializer puts the model files, and where the runtime reads them.
MODEL_MOUNT = "/mnt/models"
# Labels that mark the model-server containers bertops started.
ENDPOINT_LABEL = "bertops.io/endpoint"


def client() -> docker.DockerClient:
    """A client of the local engine; ``BertopsError`` saying how to start one if none answers."""
    import docker

    try:
        engine = docker.from_env()
        engine.ping()
    except docker.errors.DockerException as exc:
        raise BertopsError(
            f"no container engine answers ({exc.__class__.__name__}): start one with `docker/engine.sh` "
            "(as root it installs and starts dockerd) or Docker Desktop"
        ) from exc
    return engine


def has_image(engine: docker.DockerClient, image: str) -> bool:
    """True when ``image`` is in the engine's local store."""
    import docker

    try:
        engine.images.get(image)
    except docker.errors.ImageNotFound:
        return False
    return True


def ensure_step_images(engine: docker.DockerClient) -> list[str]:
    """Check the images the compiled pipeline names are here; returns warnings for the log.

    The CUDA image cannot be built without NVIDIA's base image; on a machine without it the CPU
    image is tagged with the CUDA image's name (the fine-tune step then trains on the CPU), and
    the warning says so on every run.
    """
    if not has_image(engine, CPU_IMAGE):
        raise BertopsError(f"image {CPU_IMAGE} is not built: run `make images` (or docker/build.sh) first")
    warnings = []
    if not has_image(engine, CUDA_IMAGE):
        engine.images.get(CPU_IMAGE).tag(CUDA_IMAGE)
    if engine.images.get(CUDA_IMAGE).labels.get(TITLE_LABEL) != "bertops-cuda":
        warnings.append(
            f"no CUDA image on this machine: {CUDA_IMAGE} is the CPU image {CPU_IMAGE} under that name, "
            "so the fine-tune step runs on the CPU; build the real one with `docker/build.sh cuda`"
        )
    return warnings


def start_model_server(
    engine: docker.DockerClient,
    image: str,
    command: list[str],
    model_dir: Path,
    name: str,
    log_file: Path,
) -> Any:
    """Start ``command`` from ``image`` with ``model_dir`` read-only at /mnt/models, as the
    ServingRuntime's pod would run it: non-root, read-only root filesystem, a writable /tmp,
    no capabilities, no privilege escalation. Its output is appended to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    container = engine.containers.run(
        image,
        command=command,
        detach=True,
        network_mode="host",
        user=IMAGE_USER,
        read_only=True,
        tmpfs={"/tmp": "rw,size=2g"},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        environment={"XDG_CACHE_HOME": "/tmp/cache"},
        volumes={str(model_dir): {"bind": MODEL_MOUNT, "mode": "ro"}},
        labels={ENDPOINT_LABEL: name, "bertops.io/log-file": str(log_file)},
    )
    return container


def container_running(container_id: str) -> bool:
    """True while the container exists and runs."""
    import docker

    try:
        return str(client().containers.get(container_id).status) == "running"
    except (docker.errors.NotFound, BertopsError):
        return False


def container_logs(container_id: str, lines: int = 20) -> str:
    """The last ``lines`` lines the container printed ('' if it is gone)."""
    import docker

    try:
        return bytes(client().containers.get(container_id).logs(tail=lines)).decode(errors="replace")
    except (docker.errors.NotFound, BertopsError):
        return ""


def stop_container(container_id: str, grace_seconds: int = 15) -> None:
    """SIGTERM the container (graceful shutdown), SIGKILL after the grace period, then remove it."""
    import docker

    try:
        container = client().containers.get(container_id)
    except docker.errors.NotFound:
        return
    log_file = container.labels.get("bertops.io/log-file")
    try:
        container.stop(timeout=grace_seconds)
        if log_file:
            with Path(log_file).open("ab") as out:
                out.write(container.logs())
        container.remove(force=True)
    except docker.errors.NotFound:
        return
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        try:
            client().containers.get(container_id)
        except docker.errors.NotFound:
            return
        time.sleep(0.2)
