"""V2 protocol conformance of real servers on loopback: versioned routes, model metadata, the
repository API's answers, and a schema-driven fuzz of the server's own OpenAPI document.

``served``: ``serving.server`` as the deploy step starts it (ONNX Runtime, repository API off),
told that it serves registry version 7. ``unversioned``: PyTorch, no ``--model-version``, the
repository API on (loopback).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from test_serving import wait_ready

from components.deploy.deploy import free_port

NAME = "m"
VERSION = "7"
BODY = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["Shares rose", "A late goal"]}]}


def start(model_dir: Path, log: Path, *flags: str) -> tuple[str, subprocess.Popen[bytes]]:
    """``serving.server`` for ``model_dir`` as model ``NAME`` on a free loopback port, ready: its URL and process."""
    port = free_port()
    command = [sys.executable, "-m", "serving.server", "--model-dir", str(model_dir), "--model-name", NAME]
    command += ["--http-port", str(port), "--log-format", "text", *flags]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_ready(f"{url}/v2/models/{NAME}/ready", process)
    if process.poll() is not None:
        pytest.fail(f"the server exited with {process.returncode}: {log.read_text()[-2000:]}")
    return url, process


def stop(process: subprocess.Popen[bytes]) -> None:
    """Kill a server ``start`` started, and reap it."""
    if process.poll() is None:
        process.kill()
    process.wait()


@pytest.fixture(scope="module")
def served(onnx_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a server for registry version 7: ONNX Runtime, repository API off (the defaults)."""
    url, process = start(onnx_model, tmp_path_factory.mktemp("served") / "server.log", "--model-version", VERSION)
    yield url
    stop(process)


@pytest.fixture(scope="module")
def unversioned(trained_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a server that knows no registry version: PyTorch, repository API on."""
    log = tmp_path_factory.mktemp("unversioned") / "server.log"
    url, process = start(trained_tiny, log, "--backend", "torch", "--repository-api", "true")
    yield url
    stop(process)


def outputs(answer: requests.Response) -> dict[str, Any]:
    """The output tensors of a 200 V2 inference answer, by name."""
    assert answer.status_code == 200, answer.text
    return {o["name"]: o["data"] for o in answer.json()["outputs"]}


# --- versioned routes ------------------------------------------------------------------------


def test_the_served_version_answers_like_the_unversioned_routes(served: str) -> None:
    model = f"{served}/v2/models/{NAME}"
    metadata = requests.get(model, timeout=10).json()
    assert requests.get(f"{model}/versions/{VERSION}", timeout=10).json() == metadata
    assert requests.get(model, params={"model_version": VERSION}, timeout=10).json() == metadata
    assert requests.get(f"{model}/versions/{VERSION}/ready", timeout=10).json() == {"name": NAME, "ready": True}
    expected = outputs(requests.post(f"{model}/infer", json=BODY, timeout=30))
    assert outputs(requests.post(f"{model}/versions/{VERSION}/infer", json=BODY, timeout=30)) == expected
    answer = requests.post(f"{model}/infer", params={"model_version": VERSION}, json=BODY, timeout=30)
    assert outputs(answer) == expected
    # The answer says which version answered.
    assert answer.json()["model_version"] == VERSION


@pytest.mark.parametrize(
    ("method", "route", "params"),
    [
        ("GET", "/versions/6", {}),
        ("GET", "/versions/6/ready", {}),
        ("POST", "/versions/6/infer", {}),
        ("GET", "", {"model_version": "6"}),
        ("GET", "/ready", {"model_version": "6"}),
        ("POST", "/infer", {"model_version": "6"}),
        # Both given, one of them wrong.
        ("POST", f"/versions/{VERSION}/infer", {"model_version": "6"}),
    ],
)
def test_another_version_is_a_404_naming_the_served_one(
    served: str, method: str, route: str, params: dict[str, str]
) -> None:
    answer = requests.request(
        method, f"{served}/v2/models/{NAME}{route}", params=params, json=BODY if method == "POST" else None, timeout=30
    )
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"] == (
        f"model '{NAME}' has no version '6' here: this server serves version '{VERSION}' "
        "(ask for it, or leave the version out)"
    )


def test_tritonclient_asks_for_the_served_version(served: str) -> None:
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(served.removeprefix("http://"))
    assert client.is_model_ready(NAME, VERSION)
    assert client.get_model_metadata(NAME, VERSION)["versions"] == [VERSION]
    text = httpclient.InferInput("text", [1], "BYTES")
    text.set_data_from_numpy(np.array(["Election results tonight"], dtype=object))
    result = client.infer(NAME, [text], model_version=VERSION)
    assert result.as_numpy("probabilities").shape == (1, 5)
    with pytest.raises(InferenceServerException, match="this server serves version '7'"):
        client.infer(NAME, [text], model_version="6")


def test_a_server_that_knows_no_version_serves_only_the_unversioned_routes(unversioned: str) -> None:
    model = f"{unversioned}/v2/models/{NAME}"
    answer = requests.get(f"{model}/versions/{VERSION}/ready", timeout=10)
    assert answer.status_code == 404
    assert "started without --model-version" in answer.json()["error"]
    assert requests.get(model, params={"model_version": VERSION}, timeout=10).status_code == 404
    assert requests.get(f"{model}/ready", timeout=10).status_code == 200


# --- metadata ---------------------------------------------------------------------------------


def test_metadata_names_the_version_and_the_backend(served: str, unversioned: str) -> None:
    """``platform`` in the Triton convention (``onnxruntime_onnx``); PyTorch has no Triton name."""
    onnx = requests.get(f"{served}/v2/models/{NAME}", timeout=10).json()
    assert (onnx["versions"], onnx["platform"]) == ([VERSION], "onnxruntime_onnx")
    torch = requests.get(f"{unversioned}/v2/models/{NAME}", timeout=10).json()
    assert (torch["versions"], torch["platform"]) == ([], "pytorch_safetensors")


# --- the repository API -----------------------------------------------------------------------


def test_loading_a_model_the_server_does_not_hold_is_a_404(unversioned: str) -> None:
    """KServe says 503 (not ready) to any load, since nothing here loads models by name."""
    repository = f"{unversioned}/v2/repository/models"
    answer = requests.post(f"{repository}/nope/load", timeout=10)
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"] == "Model with name nope does not exist."
    assert requests.post(f"{repository}/nope/unload", timeout=10).status_code == 404
    # The model it holds loads (it is loaded already), and still answers.
    assert requests.post(f"{repository}/{NAME}/load", timeout=10).json() == {"name": NAME, "load": True}
    assert requests.post(f"{unversioned}/v2/models/{NAME}/infer", json=BODY, timeout=30).status_code == 200


def test_explain_is_a_404_without_an_explainer(served: str) -> None:
    """KServe answers 501 (a server error) to ``:explain`` of a model that has no explainer."""
    answer = requests.post(f"{served}/v1/models/{NAME}:explain", json={"instances": ["x"]}, timeout=10)
    assert answer.status_code == 404
    assert answer.json()["error"] == f"model '{NAME}' has no explainer: this server answers :predict and /infer"
    assert requests.post(f"{served}/v1/models/nope:explain", json={"instances": ["x"]}, timeout=10).status_code == 404


# --- fuzz -------------------------------------------------------------------------------------


def test_no_request_the_openapi_document_allows_is_a_server_error(served: str, tmp_path: Path) -> None:
    """Schemathesis's own runner over every operation of /openapi.json: no answer is a 5xx.

    Its CLI, in a process of its own: its pytest loader for a schema that a fixture serves does not
    run under pytest 9 (``request.node._nodeid``). Requests go to the served model (random names
    would all stop at a 404), valid and invalid ones (mode ``all``), derandomized so that a run
    repeats the last one. KServe leaves the versioned metadata and inference routes out of its
    document (the versioned readiness route is in it); the tests above cover them.
    """
    (tmp_path / "schemathesis.toml").write_text(f'[parameters]\nmodel_name = "{NAME}"\n')
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", "schemathesis.toml", "--no-color", "run"]
    command += [f"{served}/openapi.json", "--checks", "not_a_server_error", "--max-examples", "60"]
    command += ["--generation-deterministic", "--workers", "1", "--report", "json", "--report-json-path", str(report)]
    # In tmp_path: the runner keeps a cache directory where it runs.
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    summary = json.loads(report.read_text())
    assert summary["operations"]["tested"] == summary["operations"]["total"] >= 16
    assert summary["test_cases"]["generated"] > 200 and summary["failures"] == [] and summary["errors"] == []


def test_the_openapi_document_has_the_v1_and_v2_routes(served: str) -> None:
    paths = requests.get(f"{served}/openapi.json", timeout=10).json()["paths"]
    assert {"/v1/models/{model_name}:predict", "/v2/models/{model_name}/infer", "/v2/models/{model_name}"} <= set(paths)
    assert "/v2/models/{model_name}/versions/{model_version}/ready" in paths


def test_the_docker_target_passes_the_version_as_the_cluster_does() -> None:
    """``bertops run --runner docker`` starts the ServingRuntime's own command; the version goes in it."""
    from components.deploy.deploy_docker import runtime_command
    from serving.server import parse_args

    command = runtime_command(NAME, 8080, VERSION)
    assert command[:3] == ["python", "-m", "serving.server"]
    assert parse_args(command[3:]).config.model_version == VERSION
