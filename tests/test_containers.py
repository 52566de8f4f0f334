"""The container path for real: the CPU image that `make images` builds, every pipeline step run
in its image by kfp.local's DockerRunner, and the winner served from the serving image the way
the ServingRuntime starts it, queried over V1 and V2.

`make test` starts a container engine and builds the image first (as root it installs Debian's
docker.io). In CI (``CI=true``) these tests must run; elsewhere, without an engine or the
image, they skip with a one-line notice saying how to get them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from bertops import containers, endpoints
from bertops.images import CPU_IMAGE, CUDA_IMAGE

REPO_ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.containers


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the container tests, but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    """The local engine with the CPU image built; skips (fails in CI) otherwise."""
    try:
        client = containers.client()
    except Exception as exc:  # noqa: BLE001 - any failure to reach an engine means "no engine"
        _unavailable(f"no container engine answers: `sudo docker/engine.sh` starts one ({exc})")
    if not containers.has_image(client, CPU_IMAGE):
        _unavailable(f"image {CPU_IMAGE} is not built: `make images` builds it")
    yield client
    client.close()


def _run_in_image(engine: Any, *command: str) -> str:
    output = engine.containers.run(CPU_IMAGE, list(command), network_mode="host", remove=True)
    return bytes(output).decode()


def test_image_runs_the_project_as_its_non_root_user(engine: Any) -> None:
    assert _run_in_image(engine, "id", "-u").strip() == "10001"
    probe = "import bertops, components, pipelines, serving, kfp, torch, kserve; print(torch.__version__)"
    assert _run_in_image(engine, "python", "-c", probe).strip().endswith("+cpu")
    # A step in a pod names the serving image (the deploy step): it must be the one built, not 0.1.0.
    names = "from bertops.images import CPU_IMAGE, CUDA_IMAGE; print(CPU_IMAGE, CUDA_IMAGE)"
    assert _run_in_image(engine, "python", "-c", names).split() == [CPU_IMAGE, CUDA_IMAGE]
    # The DVC project directory belongs to the user: `dvc pull` can create data/ there.
    assert _run_in_image(engine, "sh", "-c", "touch /home/bertops/project/probe && echo ok").strip() == "ok"


def test_pip_check_finds_only_the_intended_exceptions(engine: Any) -> None:
    # The two data packages are installed with --no-deps on purpose (the Makefile does the same).
    allowed = set((REPO_ROOT / "docker" / "pip-check-allowed.txt").read_text().splitlines())
    found = _run_in_image(engine, "sh", "-c", "pip check || true").strip().splitlines()
    assert found and set(found) <= allowed, found


def _readable_by_others(path: Path) -> None:
    """pytest's temporary directories are private; the image's user reads the data and model."""
    for item in (path, *path.rglob("*")):
        item.chmod(item.stat().st_mode | (0o555 if item.is_dir() else 0o444))


def test_pipeline_runs_in_containers_and_the_winner_serves_from_the_image(
    engine: Any, bbc_data: Path, tiny_model: Path, tmp_path: Path
) -> None:
    _readable_by_others(bbc_data)
    _readable_by_others(tiny_model)
    state = tmp_path / "state"
    command = [
        sys.executable,
        "-m",
        "cli",
        "run",
        "--runner",
        "docker",
        "--data-path",
        str(bbc_data),
        "--state-dir",
        str(state),
        "--base-model",
        str(tiny_model),
        "--max-train-samples",
        "120",
        "--max-eval-samples",
        "40",
        "--max-length",
        "32",
        "--max-steps",
        "5",
        "--eval-every",
        "0",
        "--learning-rate",
        "0.002",
        "--min-accuracy",
        "0",
        "--model-name",
        "ctr-news",
    ]
    try:
        result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1500, check=False)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        (log_file,) = (state / "runs").glob("*.log")
        run_log = log_file.read_text()
        # kfp.local's DockerRunner names the image of every task it starts.
        assert f"Found image '{CPU_IMAGE}'" in run_log and f"Found image '{CUDA_IMAGE}'" in run_log

        endpoint = endpoints.get("ctr-news", state)
        assert endpoint.container and endpoint.url.startswith("http://127.0.0.1:")
        served = engine.containers.get(endpoint.container)
        assert served.image.tags and CPU_IMAGE in served.image.tags
        assert served.attrs["Config"]["User"] == containers.IMAGE_USER
        assert served.attrs["HostConfig"]["ReadonlyRootfs"] is True
        mounts = {m["Destination"]: m for m in served.attrs["Mounts"]}
        assert mounts[containers.MODEL_MOUNT]["RW"] is False

        v1 = requests.post(endpoint.v1_predict_url, json={"instances": ["The striker scored twice."]}, timeout=60)
        assert v1.status_code == 200, v1.text
        assert v1.json()["predictions"][0]["label"] in ("business", "entertainment", "politics", "sports", "tech")
        body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["Shares fell sharply."]}]}
        v2 = requests.post(endpoint.v2_infer_url, json=body, timeout=60)
        assert v2.status_code == 200, v2.text
        assert {o["name"] for o in v2.json()["outputs"]} == {"label", "probabilities"}
        assert "endpoint" in result.stdout and "ctr-news" in result.stdout

        # Promoting (here: again) redeploys the champion in a new container, then stops the old one.
        promoted = subprocess.run(
            [
                sys.executable,
                "-m",
                "cli",
                *["models", "promote", "1", "--model-name", "ctr-news"],
                "--state-dir",
                str(state),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert promoted.returncode == 0, promoted.stderr
        replaced = endpoints.get("ctr-news", state)
        assert replaced.container and replaced.container != endpoint.container
        assert not containers.container_running(endpoint.container)
        assert requests.post(replaced.v1_predict_url, json={"instances": ["Rain."]}, timeout=60).status_code == 200
        endpoint = replaced

        listed = subprocess.run(
            [sys.executable, "-m", "cli", "endpoints", "list", "--state-dir", str(state)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "ctr-news" in listed and "yes" in listed
        deleted = subprocess.run(
            [sys.executable, "-m", "cli", "endpoints", "delete", "ctr-news", "--state-dir", str(state)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert deleted.returncode == 0, deleted.stderr
        assert not containers.container_running(endpoint.container)
        assert endpoints.list_endpoints(state) == []
    finally:
        for leftover in engine.containers.list(all=True, filters={"label": containers.ENDPOINT_LABEL}):
            if json.dumps(leftover.labels).find(str(state)) >= 0:
                leftover.remove(force=True)


def test_thread_counts_follow_the_container_cpu_limit(engine: Any) -> None:
    # The image runs on this machine's cores; a 1-CPU limit (a pod's `limits.cpu: 1`) must give 1 thread.
    probe = "from bertops.cpu import available_cpus, cpu_quota; print(cpu_quota(), available_cpus())"
    output = engine.containers.run(CPU_IMAGE, ["python", "-c", probe], nano_cpus=1_000_000_000, remove=True)
    assert bytes(output).decode().split() == ["1.0", "1"]
