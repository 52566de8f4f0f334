"""The predictor directly, then a real KServe server started by the deploy step, on loopback."""

import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from bertops import endpoints
from bertops.endpoints import Endpoint
from components.deploy.deploy import deploy_local
from components.register.register import register_model
from serving.predictor import TextClassifierPredictor

LINEAGE = {"data_version": "md5:x", "git_commit": "c", "base_model": "tiny", "pipeline_run": "r"}


def test_predictor_returns_label_names_and_probabilities(trained_tiny: Path) -> None:
    predictor = TextClassifierPredictor(trained_tiny)
    labels, probs = predictor.predict(["Shares rose on Wall Street", "The striker scored twice " * 200])
    assert probs.shape == (2, 5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert set(labels) <= set(predictor.labels)
    with pytest.raises(ValueError, match="expected a string"):
        predictor.predict(["ok", 3])  # type: ignore[list-item]


@pytest.fixture(scope="module")
def endpoint(trained_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    state = tmp_path_factory.mktemp("serve-state")
    version = register_model(trained_tiny, "news", {"accuracy": 0.5}, {}, LINEAGE, True, str(state)).version
    served = deploy_local("news", version, str(state))
    yield served
    endpoints.delete("news", state)
    assert not endpoints.pid_alive(served.pid)


def test_endpoint_listens_on_loopback_only(endpoint: Endpoint) -> None:
    port = int(endpoint.url.rsplit(":", 1)[1])
    assert endpoint.url.startswith("http://127.0.0.1:")
    addresses = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)} - {"127.0.0.1"}
    for address in addresses:
        with socket.socket() as sock:
            sock.settimeout(1)
            assert sock.connect_ex((address, port)) != 0, f"server reachable on {address}"


def test_v1_and_v2_answer_labels_and_probabilities(endpoint: Endpoint) -> None:
    v1 = requests.post(
        endpoint.v1_predict_url, json={"instances": ["Oil prices fell", {"text": "New phone"}]}, timeout=30
    )
    assert v1.status_code == 200
    predictions = v1.json()["predictions"]
    assert len(predictions) == 2
    assert set(predictions[0]["probabilities"]) == {"business", "entertainment", "politics", "sports", "tech"}
    assert predictions[0]["label"] in predictions[0]["probabilities"]
    body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["Election results tonight"]}]}
    v2 = requests.post(endpoint.v2_infer_url, json=body, timeout=30)
    assert v2.status_code == 200
    outputs = {o["name"]: o for o in v2.json()["outputs"]}
    assert outputs["label"]["datatype"] == "BYTES" and outputs["label"]["shape"] == [1]
    assert outputs["probabilities"]["datatype"] == "FP32" and outputs["probabilities"]["shape"] == [1, 5]
    assert sum(outputs["probabilities"]["data"]) == pytest.approx(1.0, rel=1e-4)


def test_tritonclient_round_trip(endpoint: Endpoint) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(endpoint.url.removeprefix("http://"))
    text = httpclient.InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(np.array([b"Film awards night", b"Budget vote in parliament"], dtype=object))
    result = client.infer("news", [text])
    assert result.as_numpy("probabilities").shape == (2, 5)
    assert len(result.as_numpy("label")) == 2


@pytest.mark.parametrize(
    "body",
    [
        {"instances": []},
        {"instances": [42]},
        {"text": "no instances key"},
    ],
)
def test_v1_malformed_input_is_400(endpoint: Endpoint, body: object) -> None:
    response = requests.post(endpoint.v1_predict_url, json=body, timeout=30)
    assert response.status_code == 400, response.text


@pytest.mark.parametrize(
    "tensor",
    [
        {"name": "text", "shape": [3], "datatype": "BYTES", "data": ["only one"]},
        {"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]},
    ],
)
def test_v2_malformed_input_is_400(endpoint: Endpoint, tensor: dict[str, object]) -> None:
    response = requests.post(endpoint.v2_infer_url, json={"inputs": [tensor]}, timeout=30)
    assert response.status_code == 400, response.text


def test_endpoints_list_and_delete(trained_tiny: Path, state_dir: Path) -> None:
    version = register_model(trained_tiny, "other", {}, {}, LINEAGE, True, str(state_dir)).version
    served = deploy_local("other", version, str(state_dir))
    assert [e.name for e in endpoints.list_endpoints(state_dir)] == ["other"]
    assert served.is_ready()
    endpoints.delete("other", state_dir)
    assert endpoints.list_endpoints(state_dir) == []
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{served.url}/v2/health/ready", timeout=5)
