"""The predictor directly, then real KServe servers on loopback.

``endpoint``: the deploy step's server for a registered model that carries ``model.onnx``
(server defaults: ONNX Runtime, adaptive batching). ``bounded``: ``serving.server`` started by
hand with PyTorch and tight limits, for the bounds, the busy-model and the shutdown tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests

from bertops import endpoints
from bertops.endpoints import Endpoint
from components.deploy.deploy import deploy_local, free_port
from components.register.register import Submission, register_model
from serving.config import ServingConfig
from serving.predictor import TextClassifierPredictor, plan_batches
from serving.server import parse_args

LINEAGE = {"data_version": "md5:x", "git_commit": "c", "base_model": "tiny", "pipeline_run": "r"}
LABELS = {"business", "entertainment", "politics", "sports", "tech"}
LONG_TEXT = "Parliament debated the budget late into the night before the final vote. " * 25


def test_predictor_returns_label_names_and_probabilities(trained_tiny: Path) -> None:
    predictor = TextClassifierPredictor(trained_tiny)
    labels, probs = predictor.predict(["Shares rose on Wall Street", "The striker scored twice " * 200])
    assert probs.shape == (2, 5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert set(labels) <= set(predictor.labels) == LABELS
    # Longer than the length the model was trained on (64, recorded in its tokenizer): truncated
    # there, as the evaluate step truncated it, not an error.
    assert len(predictor.encode(["word " * 5000])[0]) == predictor.max_length == 64
    with pytest.raises(ValueError, match="expected a string"):
        predictor.predict(["ok", 3])  # type: ignore[list-item]


def test_batches_are_planned_by_length() -> None:
    lengths = [30, 500, 32, 31, 29, 33]
    passes = plan_batches(lengths, max_rows=32, max_tokens=8192)
    # The long text runs alone rather than padding five short ones to 500 tokens.
    assert sorted(map(sorted, passes)) == [[0, 2, 3, 4, 5], [1]]
    passes = plan_batches([10] * 10, max_rows=4, max_tokens=8192)
    assert max(len(p) for p in passes) == 4
    assert sorted(i for p in passes for i in p) == list(range(10))
    # A budget of 100 tokens holds two rows of 40; a 300-token text still gets a pass of its own.
    lengths = [40, 40, 40, 300]
    passes = plan_batches(lengths, max_rows=32, max_tokens=100)
    assert sorted(len(p) for p in passes) == [1, 1, 2]
    assert all(len(p) * max(lengths[i] for i in p) <= 100 for p in passes if len(p) > 1)
    assert plan_batches([], max_rows=4, max_tokens=100) == []


def test_server_flags_build_the_serving_config() -> None:
    args = parse_args(["--model-dir", "m", "--model-name", "n", "--max-batch-size", "8", "--backend", "torch"])
    assert args.config == ServingConfig(max_batch_size=8, backend="torch")
    assert (args.host, args.http_port) == ("127.0.0.1", 8080)
    with pytest.raises(SystemExit):
        parse_args(["--model-dir", "m", "--model-name", "n", "--backend", "tensorrt"])
    with pytest.raises(SystemExit):
        parse_args(["--model-dir", "m", "--model-name", "n", "--max-body-bytes", "0"])


@pytest.fixture(scope="module")
def endpoint(onnx_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    state = tmp_path_factory.mktemp("serve-state")
    version = register_model(Submission(onnx_model, "news", {"accuracy": 0.5}, {}, LINEAGE), True, str(state)).version
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


def test_v1_and_v2_answer_label_names_and_numeric_probabilities(endpoint: Endpoint) -> None:
    v1 = requests.post(
        endpoint.v1_predict_url, json={"instances": ["Oil prices fell", {"text": "New phone"}]}, timeout=30
    )
    assert v1.status_code == 200
    predictions = v1.json()["predictions"]
    assert len(predictions) == 2
    assert set(predictions[0]["probabilities"]) == LABELS
    assert predictions[0]["label"] in LABELS
    assert sum(predictions[1]["probabilities"].values()) == pytest.approx(1.0, rel=1e-4)
    body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["Election results tonight"]}]}
    v2 = requests.post(endpoint.v2_infer_url, json=body, timeout=30)
    assert v2.status_code == 200
    outputs = {o["name"]: o for o in v2.json()["outputs"]}
    assert outputs["label"]["datatype"] == "BYTES" and outputs["label"]["shape"] == [1]
    assert outputs["label"]["data"][0] in LABELS
    probabilities = outputs["probabilities"]
    assert probabilities["datatype"] == "FP32" and probabilities["shape"] == [1, 5]
    assert all(isinstance(p, float) for p in probabilities["data"])
    assert sum(probabilities["data"]) == pytest.approx(1.0, rel=1e-4)
    # [N, 1] with nested data is the same request.
    nested = {"inputs": [{"name": "text", "shape": [2, 1], "datatype": "BYTES", "data": [["a"], ["b"]]}]}
    assert requests.post(endpoint.v2_infer_url, json=nested, timeout=30).json()["outputs"][1]["shape"] == [2, 5]


def test_metadata_and_readiness(endpoint: Endpoint) -> None:
    metadata = requests.get(f"{endpoint.url}/v2/models/news", timeout=10).json()
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert {o["name"]: o["shape"] for o in metadata["outputs"]} == {"label": [-1], "probabilities": [-1, 5]}
    # The backend that serves the model and the registry version the deploy step started it for
    # (KServe leaves both empty).
    assert (metadata["platform"], metadata["versions"]) == ("onnxruntime_onnx", [endpoint.model_version])
    assert requests.get(f"{endpoint.url}/v2/models/news/ready", timeout=10).status_code == 200
    assert requests.get(f"{endpoint.url}/v2/health/ready", timeout=10).json() == {"ready": True}
    assert requests.get(f"{endpoint.url}/v1/models/news", timeout=10).json() == {"name": "news", "ready": True}


def test_tritonclient_round_trip(endpoint: Endpoint) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(endpoint.url.removeprefix("http://"))
    assert client.is_model_ready("news")
    text = httpclient.InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(np.array([b"Film awards night", "Budget vote \u00e9".encode()], dtype=object))
    result = client.infer("news", [text])
    assert result.as_numpy("probabilities").shape == (2, 5)
    assert result.as_numpy("probabilities").dtype == np.float32
    assert {label.decode() for label in result.as_numpy("label")} <= LABELS
    only = client.infer("news", [text], outputs=[httpclient.InferRequestedOutput("label", binary_data=False)])
    assert only.as_numpy("probabilities") is None and len(only.as_numpy("label")) == 2


def test_kserve_inference_rest_client_round_trip(endpoint: Endpoint) -> None:
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    async def both() -> tuple[object, object]:
        v2 = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
        v1 = InferenceRESTClient(RESTConfig(protocol="v1", retries=0, timeout=30))
        try:
            request = InferRequest("news", [InferInput("text", [2], "BYTES", ["Markets rally", "Cup final"])])
            return (
                await v2.infer(endpoint.url, data=request, model_name="news"),
                await v1.infer(endpoint.url, data={"instances": ["Markets rally"]}, model_name="news"),
            )
        finally:
            await v2.close()
            await v1.close()

    v2_response, v1_response = asyncio.run(both())
    outputs = {o.name: o for o in v2_response.outputs}  # type: ignore[attr-defined]
    assert outputs["probabilities"].as_numpy().shape == (2, 5)
    assert outputs["label"].data[0] in LABELS
    assert v1_response["predictions"][0]["label"] in LABELS  # type: ignore[index]


BINARY_HEADER = "Inference-Header-Content-Length"


def _binary(header: dict[str, object], tail: bytes = b"") -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + tail, {"Content-Type": "application/octet-stream", BINARY_HEADER: str(len(head))}


def _v2(*tensors: dict[str, object], **extra: object) -> bytes:
    return json.dumps({"inputs": list(tensors), **extra}).encode()


TEXT: dict[str, object] = {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["ok"]}
JSON = {"Content-Type": "application/json"}
MALFORMED = {
    # V1
    "v1 zero instances": ("v1", json.dumps({"instances": []}).encode(), JSON, 400),
    "v1 number instance": ("v1", json.dumps({"instances": [42]}).encode(), JSON, 400),
    "v1 null instance": ("v1", json.dumps({"instances": [None]}).encode(), JSON, 400),
    "v1 dict without text": ("v1", json.dumps({"instances": [{"txt": "x"}]}).encode(), JSON, 400),
    "v1 instances not a list": ("v1", json.dumps({"instances": "x"}).encode(), JSON, 400),
    "v1 no instances field": ("v1", json.dumps({"text": "x"}).encode(), JSON, 400),
    "v1 body is a list": ("v1", b"[1, 2]", JSON, 400),
    "v1 invalid json": ("v1", b"{not json", JSON, 400),
    "v1 invalid json, other content type": ("v1", b"{not json", {"Content-Type": "text/plain"}, 400),
    "v1 too many instances": ("v1", json.dumps({"instances": ["x"] * 65}).encode(), JSON, 400),
    # V2, JSON
    "v2 shape does not match data": ("v2", _v2({**TEXT, "shape": [3]}), JSON, 400),
    "v2 shape of two dimensions": ("v2", _v2({**TEXT, "shape": [1, 2], "data": ["a", "b"]}), JSON, 400),
    "v2 negative shape": ("v2", _v2({**TEXT, "shape": [-1]}), JSON, 400),
    "v2 wrong datatype": ("v2", _v2({**TEXT, "datatype": "FP32", "data": [1.0]}), JSON, 400),
    "v2 number in BYTES data": ("v2", _v2({**TEXT, "data": [7]}), JSON, 400),
    "v2 two inputs": ("v2", _v2(TEXT, {**TEXT, "name": "more"}), JSON, 400),
    "v2 zero inputs": ("v2", _v2(), JSON, 400),
    "v2 unknown output": ("v2", _v2(TEXT, outputs=[{"name": "logits"}]), JSON, 400),
    "v2 unknown input name": ("v2", _v2({**TEXT, "name": "input_text"}), JSON, 400),
    "v2 missing data": ("v2", _v2({k: v for k, v in TEXT.items() if k != "data"}), JSON, 422),
    "v2 missing shape": ("v2", _v2({k: v for k, v in TEXT.items() if k != "shape"}), JSON, 422),
    "v2 shape not a list": ("v2", _v2({**TEXT, "shape": "1"}), JSON, 422),
    "v2 inputs not a list": ("v2", json.dumps({"inputs": "x"}).encode(), JSON, 422),
    "v2 no inputs field": ("v2", b"{}", JSON, 422),
    "v2 invalid json": ("v2", b"{not json", JSON, 422),
    # V2, binary tensor extension (what tritonclient sends)
    "v2 binary without inputs": ("v2", *_binary({"x": 1}), 400),
    "v2 binary data cut short": (
        "v2",
        *_binary({"inputs": [{**TEXT, "data": None, "parameters": {"binary_data_size": 3}}]}, b"abc"),
        400,
    ),
    "v2 binary header not a number": (
        "v2",
        _v2(TEXT),
        {"Content-Type": "application/octet-stream", BINARY_HEADER: "many"},
        400,
    ),
}


@pytest.mark.parametrize(("protocol", "body", "headers", "status"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_input_is_a_client_error(
    endpoint: Endpoint, protocol: str, body: bytes, headers: dict[str, str], status: int
) -> None:
    url = endpoint.v1_predict_url if protocol == "v1" else endpoint.v2_infer_url
    response = requests.post(url, data=body, headers=headers, timeout=30)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error, str) and 10 < len(error) < 500


def test_a_v2_json_body_without_content_type_is_json(endpoint: Endpoint) -> None:
    # tritonclient's JSON mode (binary_data=False) sends no Content-Type; Triton accepts that.
    body = json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["Cup final"]}]})
    answer = requests.post(endpoint.v2_infer_url, data=body.encode(), timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"][0] in LABELS


def test_a_lone_surrogate_fails_only_its_own_request(endpoint: Endpoint) -> None:
    # "\udc00" is valid JSON but no character: it used to fail in the tokenizer, inside a batch
    # shared with every request that arrived with it, and all of them answered 500.
    def v2(text: str) -> requests.Response:
        body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]}
        return requests.post(endpoint.v2_infer_url, json=body, timeout=120)

    texts = [f"Story {i}: the minister spoke about the budget." for i in range(31)]
    barrier = threading.Barrier(32)
    answers: dict[int, requests.Response] = {}

    def send(i: int, text: str) -> None:
        barrier.wait()
        answers[i] = v2(text)

    threads = [threading.Thread(target=send, args=(i, t)) for i, t in enumerate([*texts, "bad \udc00 text"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [answers[i].status_code for i in range(31)] == [200] * 31
    assert answers[31].status_code == 400
    assert "lone surrogate (U+DC00) at character 4" in answers[31].json()["error"]
    v1 = requests.post(endpoint.v1_predict_url, json={"instances": ["ok", "\ud800"]}, timeout=60)
    # KServe's own V1 JSON parser refuses it already; still a 400 that names the problem.
    assert v1.status_code == 400 and "surrogate" in v1.json()["error"]


def test_a_client_error_or_a_client_that_leaves_is_one_log_line(endpoint: Endpoint) -> None:
    # Each used to log KServe's ERROR with a 1.3 KB traceback; a disconnect two, and counted as a 500.
    log_file = Path(endpoint.log_file)
    start = len(log_file.read_bytes())
    assert requests.get(f"{endpoint.url}/v2/models/nope", timeout=10).status_code == 404
    assert requests.post(f"{endpoint.url}/v2/models/nope/infer", json={"inputs": []}, timeout=10).status_code == 404
    assert requests.post(endpoint.v1_predict_url, json={"instances": []}, timeout=10).status_code == 400
    port = int(endpoint.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        head = f"POST /v1/models/{endpoint.name}:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\n"
        sock.sendall(head.encode() + b'{"instances": ["cut sh')
        time.sleep(0.5)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and b" 499" not in log_file.read_bytes()[start:]:
        time.sleep(0.2)
    entries = [json.loads(line) for line in log_file.read_bytes()[start:].decode().splitlines() if line.startswith("{")]
    assert [e["status"] for e in entries] == [404, 404, 400, 499], entries
    assert [e["logger"] for e in entries] == ["serving.http", "serving.access", "serving.access", "serving.access"]
    assert not [e for e in entries if "exception" in e or e["level"] == "ERROR"]
    assert entries[1]["error"] == "Model with name nope does not exist." and entries[3]["error"] == "ClientDisconnect"


def wait_ready(url: str, process: subprocess.Popen[bytes], seconds: float = 180) -> None:
    """Poll a readiness ``url`` until it answers 200, the server process exits, or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            time.sleep(0.5)


def test_the_model_repository_api_is_off_by_default(endpoint: Endpoint) -> None:
    # It has no authentication: with it, anyone reaching the port could unload the model for good.
    for action in ("unload", "load"):
        answer = requests.post(f"{endpoint.url}/v2/repository/models/{endpoint.name}/{action}", timeout=10)
        assert answer.status_code == 404, answer.text
    assert requests.get(f"{endpoint.url}/v2/health/ready", timeout=10).status_code == 200
    assert requests.post(endpoint.v1_predict_url, json={"instances": ["still here"]}, timeout=30).status_code == 200


def test_the_repository_api_needs_loopback_and_unloading_makes_the_server_unready(trained_tiny: Path) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--model-dir", "m", "--model-name", "n", "--repository-api", "true", "--host", "0.0.0.0"])
    port = free_port()
    command = [sys.executable, "-m", "serving.server", "--model-dir", str(trained_tiny), "--model-name", "m"]
    command += ["--http-port", str(port), "--backend", "torch", "--repository-api", "true", "--log-format", "text"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{url}/v2/health/ready", process)
        assert requests.post(f"{url}/v2/repository/models/m/unload", timeout=30).status_code == 200
        # The model cannot answer any more, so the server must not say it is ready.
        assert requests.get(f"{url}/v2/health/ready", timeout=10).status_code == 503
        assert requests.post(f"{url}/v1/models/m:predict", json={"instances": ["x"]}, timeout=10).status_code != 200
    finally:
        process.kill()
        process.wait()


def test_metrics_and_json_logs(endpoint: Endpoint) -> None:
    requests.post(endpoint.v1_predict_url, json={"instances": ["Metrics please"]}, timeout=30).raise_for_status()
    text = requests.get(f"{endpoint.url}/metrics", timeout=10).text
    assert re.search(r'^bertops_requests_total\{code="200",endpoint="v1"\} [1-9]', text, re.MULTILINE)
    for name in ("bertops_request_seconds_bucket", "bertops_batch_size_count", "bertops_batch_seconds_count"):
        assert re.search(rf"^{name}", text, re.MULTILINE), name
    lines = [json.loads(line) for line in Path(endpoint.log_file).read_text().splitlines() if line.startswith("{")]
    access = [entry for entry in lines if entry["logger"] == "serving.access" and entry["path"].endswith(":predict")]
    assert access and {"status", "latency_ms", "time", "level"} <= set(access[-1])
    assert any(entry["logger"] == "serving.predictor" and "onnxruntime" in entry["message"] for entry in lines)


@dataclass
class Server:
    url: str
    port: int
    process: subprocess.Popen[bytes]

    def rss_bytes(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]

    def in_flight(self) -> float:
        text = requests.get(f"{self.url}/metrics", timeout=10).text
        return float(re.search(r"^bertops_requests_in_flight (\S+)$", text, re.MULTILINE).group(1))  # type: ignore[union-attr]


MAX_BODY = 256 * 1024


@pytest.fixture(scope="module")
def bounded(trained_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """PyTorch, tight limits, and one text per forward pass so that long requests take a while."""
    port = free_port()
    log = (tmp_path_factory.mktemp("bounded") / "server.log").open("wb")
    command = [sys.executable, "-m", "serving.server", "--model-dir", str(trained_tiny), "--model-name", "m"]
    command += ["--http-port", str(port), "--backend", "torch", "--log-format", "text"]
    command += [
        "--max-body-bytes",
        str(MAX_BODY),
        "--max-text-chars",
        "2000",
        "--max-batch-size",
        "1",
        "--max-wait-ms",
        "0",
    ]
    # One torch thread: on a shared machine, two spinning threads can make each pass 50x slower.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = Server(f"http://127.0.0.1:{port}", port, process)
    wait_ready(f"{server.url}/v2/models/m/ready", process)
    yield server
    if process.poll() is None:
        process.kill()
    process.wait()
    log.close()


def _raw_request(port: int, head: str, chunks: Sequence[bytes] = ()) -> int:
    """Send a request head and body chunks over a plain socket; the status code of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head.encode())
        for chunk in chunks:
            sock.sendall(chunk)
        answer = sock.makefile("rb").readline()
    return int(answer.split()[1])


def test_declared_oversized_body_is_refused_before_it_is_sent(bounded: Server) -> None:
    head = (
        "POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 104857600\r\n\r\n"
    )
    # Not one byte of the 100 MB body goes out: the answer can only come from the header.
    assert _raw_request(bounded.port, head) == 413


def test_streamed_oversized_body_is_cut_off(bounded: Server) -> None:
    head = "POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"a" * 65536
    chunks = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * (MAX_BODY // len(chunk) + 1)
    assert _raw_request(bounded.port, head, chunks) == 413
    response = requests.post(f"{bounded.url}/v1/models/m:predict", data=b"x" * (MAX_BODY + 1), timeout=30)
    assert response.status_code == 413 and "--max-body-bytes" in response.json()["error"]


def test_text_and_instance_limits(bounded: Server) -> None:
    url = f"{bounded.url}/v1/models/m:predict"
    too_long = requests.post(url, json={"instances": ["x" * 2001]}, timeout=30)
    assert too_long.status_code == 400 and "--max-text-chars" in too_long.json()["error"]
    assert requests.post(url, json={"instances": ["x" * 2000]}, timeout=30).status_code == 200
    too_many = requests.post(url, json={"instances": ["x"] * 65}, timeout=30)
    assert too_many.status_code == 400 and "--max-instances" in too_many.json()["error"]


def test_memory_stays_bounded_under_oversized_requests(bounded: Server) -> None:
    before = bounded.rss_bytes()
    declared = "POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n"
    streamed = "POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"%x\r\n%s\r\n" % (65536, b"b" * 65536)
    for _ in range(20):
        assert _raw_request(bounded.port, declared, [b"c" * 65536]) == 413
        assert _raw_request(bounded.port, streamed, [chunk] * 5) == 413
    # 20 x 100 MB declared and 20 x 320 KB streamed: the server holds none of it.
    assert bounded.rss_bytes() - before < 64 * 1024 * 1024


def _long_requests(server: Server, count: int) -> tuple[list[threading.Thread], list[int]]:
    statuses: list[int] = []

    def call() -> None:
        body = {"instances": [LONG_TEXT[:2000]] * 64}
        statuses.append(requests.post(f"{server.url}/v1/models/m:predict", json=body, timeout=300).status_code)

    threads = [threading.Thread(target=call) for _ in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while server.in_flight() < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    return threads, statuses


def test_health_answers_while_the_model_is_busy(bounded: Server) -> None:
    threads, statuses = _long_requests(bounded, 2)
    assert bounded.in_flight() >= 1
    assert requests.get(f"{bounded.url}/v2/health/ready", timeout=10).status_code == 200
    assert requests.get(f"{bounded.url}/v2/models/m/ready", timeout=10).status_code == 200
    # Still busy after both answered: they did not wait for the model.
    assert bounded.in_flight() >= 1
    for thread in threads:
        thread.join()
    assert statuses == [200] * 2


def test_no_request_ended_in_a_server_error(bounded: Server, endpoint: Endpoint) -> None:
    for url in (bounded.url, endpoint.url):
        text = requests.get(f"{url}/metrics", timeout=10).text
        assert 'reason="server_error"' not in text
        assert not re.search(r'^bertops_requests_total\{code="5', text, re.MULTILINE)


def test_sigterm_lets_in_flight_requests_finish(bounded: Server) -> None:
    threads, statuses = _long_requests(bounded, 2)
    bounded.process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join()
    assert statuses == [200] * 2
    assert bounded.process.wait(timeout=60) == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{bounded.url}/v2/health/ready", timeout=5)


def test_endpoints_list_and_delete(trained_tiny: Path, state_dir: Path) -> None:
    version = register_model(Submission(trained_tiny, "other", {}, {}, LINEAGE), True, str(state_dir)).version
    served = deploy_local("other", version, str(state_dir))
    assert [e.name for e in endpoints.list_endpoints(state_dir)] == ["other"]
    assert served.is_ready()
    endpoints.delete("other", state_dir)
    assert endpoints.list_endpoints(state_dir) == []
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{served.url}/v2/health/ready", timeout=5)
