"""The inference log: the writer (sampling, hashes only, rotation, a full queue), the reader, and the
KServe logger sink fed real HTTP CloudEvents as KServe's agent sends them."""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from bertops.inference_log import InferenceLogWriter, LogSettings, log_files, make_record, read_records
from serving.inference_sink import REQUEST_TYPE, RESPONSE_TYPE, make_server

PROBS = {"business": 0.7, "sport": 0.3}


def _write(settings: LogSettings, batches: list[list[str]], **kwargs: object) -> InferenceLogWriter:
    writer = InferenceLogWriter(settings, **kwargs)  # type: ignore[arg-type]
    for i, texts in enumerate(batches):
        writer.log_answers("news", "3", f"req-{i}", texts, ["business", "sport"], [[0.7, 0.3]] * len(texts))
    writer.close()
    return writer


def test_records_hold_the_text_or_only_its_hash_and_length(tmp_path: Path) -> None:
    _write(LogSettings(tmp_path / "full"), [["  Shares fell  ", "Goal!"]])
    _write(LogSettings(tmp_path / "hashed", log_texts=False), [["  Shares fell  "]])
    full = read_records(tmp_path / "full").records
    assert [r["text"] for r in full] == ["  Shares fell  ", "Goal!"]
    first = full[0]
    assert first["model"] == "news" and first["model_version"] == "3" and first["request_id"] == "req-0"
    assert first["label"] == "business" and first["confidence"] == pytest.approx(0.7)
    assert first["probabilities"] == pytest.approx(PROBS)
    assert first["text_sha256"] == hashlib.sha256(b"  Shares fell  ").hexdigest()
    # Stripped, as the data gate measures lengths.
    assert first["text_chars"] == len("Shares fell")
    [hashed] = read_records(tmp_path / "hashed").records
    assert "text" not in hashed
    assert hashed["text_sha256"] == first["text_sha256"] and hashed["text_chars"] == first["text_chars"]


def test_sampling_keeps_about_the_rate_and_rate_zero_keeps_nothing(tmp_path: Path) -> None:
    texts = [f"text {i}" for i in range(2000)]
    _write(LogSettings(tmp_path / "quarter", sample_rate=0.25), [texts], rng=random.Random(7))
    _write(LogSettings(tmp_path / "none", sample_rate=0.0), [texts])
    kept = read_records(tmp_path / "quarter").records
    assert 400 < len(kept) < 600
    assert len({r["text"] for r in kept}) == len(kept)
    assert read_records(tmp_path / "none").records == []
    with pytest.raises(ValueError, match="sample rate"):
        LogSettings(tmp_path, sample_rate=1.5)


def test_files_rotate_by_size_and_only_the_newest_are_kept(tmp_path: Path) -> None:
    written = threading.Semaphore(0)
    writer = InferenceLogWriter(
        LogSettings(tmp_path, max_file_bytes=2000, max_files=3), on_written=lambda n: written.release()
    )
    for i in range(40):
        writer.log_answers("news", "1", f"r{i}", [f"text number {i}"], ["business", "sport"], [[0.7, 0.3]])
        # One record per write, so that each write sees the file's size.
        assert written.acquire(timeout=30)
    writer.close()
    files = log_files(tmp_path)
    assert len(files) == 3
    assert all(p.stat().st_size <= 2000 for p in files)
    records = read_records(tmp_path).records
    # The oldest went with the removed files; the newest are all there, in order.
    ids = [int(r["request_id"][1:]) for r in records]
    assert ids == list(range(40 - len(ids), 40))
    assert 10 < len(ids) < 40


def test_a_full_queue_drops_and_counts_instead_of_waiting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stuck, written = threading.Event(), threading.Event()
    original = InferenceLogWriter._write

    def slow_disk(self: InferenceLogWriter, handle: object, records: list[dict[str, object]]) -> object:
        stuck.wait(30)
        result = original(self, handle, records)
        written.set()
        return result

    monkeypatch.setattr(InferenceLogWriter, "_write", slow_disk)
    dropped: list[int] = []
    writer = InferenceLogWriter(LogSettings(tmp_path, queue_size=5), on_drop=dropped.append)
    for i in range(30):
        writer.log_answers("news", "1", f"r{i}", ["a text"], ["business", "sport"], [[0.7, 0.3]])
    # The disk is stuck: at most one batch in the writer's hands plus five queued; the rest were dropped.
    assert sum(dropped) >= 30 - 6
    stuck.set()
    writer.close()
    assert 0 < len(read_records(tmp_path).records) <= 6


def test_the_reader_takes_the_newest_window_and_skips_torn_lines(tmp_path: Path) -> None:
    lines = [
        make_record("news", "1", f"r{i}", f"t{i}", PROBS, True, f"2026-12-02T10:{i:02d}:00+00:00") for i in range(10)
    ]
    other = make_record("other", "1", "x", "t", PROBS, True, "2026-12-02T10:59:00+00:00")
    body = "\n".join(json.dumps(r) for r in [*lines[:5], other, *lines[5:]]) + '\n{"ts": "2026-12-02T11'
    (tmp_path / "inference-1.jsonl").write_text(body, encoding="utf-8")
    window = read_records(tmp_path, "news", limit=3)
    assert [r["request_id"] for r in window.records] == ["r7", "r8", "r9"]
    assert window.unreadable == 1
    from datetime import datetime

    since = read_records(tmp_path, "news", since=datetime.fromisoformat("2026-12-02T10:08:00+00:00"))
    assert [r["request_id"] for r in since.records] == ["r8", "r9"]


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    server = make_server("127.0.0.1", 0, LogSettings(tmp_path / "sink", prefix="sink"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path / "sink"
    server.shutdown()
    server.writer.close()
    server.server_close()


def _event(url: str, kind: str, event_id: str, body: Any, version: str = "") -> requests.Response:
    """A binary-mode CloudEvent as KServe's logger worker sends it (pkg/logger/worker.go)."""
    headers = {
        "Content-Type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-type": kind,
        "ce-source": "http://localhost:9081/",
        "ce-time": "2026-12-02T11:00:00.5Z",
        "ce-recordedtime": "2026-12-02T11:00:00.6Z",
        "ce-inferenceservicename": "news",
        "ce-namespace": "bertops",
        "ce-component": "predictor",
        "ce-endpoint": "default",
        "ce-metadata": "{}",
    }
    if version:
        headers["ce-annotations"] = json.dumps({"bertops.io/model-version": version})
    return requests.post(url, data=json.dumps(body), headers=headers, timeout=10)


def test_the_sink_pairs_kserve_request_and_response_events_into_records(sink: tuple[str, Path]) -> None:
    url, directory = sink
    v1_request = {"instances": ["Shares fell", "Arsenal won"]}
    v1_response = {
        "predictions": [
            {"label": "business", "probabilities": {"business": 0.9, "sport": 0.1}},
            {"label": "sport", "probabilities": {"business": 0.2, "sport": 0.8}},
        ]
    }
    assert _event(url, REQUEST_TYPE, "id-1", v1_request, "7").status_code == 200
    assert _event(url, RESPONSE_TYPE, "id-1", v1_response, "7").status_code == 200
    # V2, the response first: the agent's workers send the two halves in any order.
    v2_request = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["Oil prices rose"]}]}
    v2_response = {
        "model_name": "news",
        "model_version": "7",
        "outputs": [
            {"name": "label", "shape": [1], "datatype": "BYTES", "data": ["business"]},
            {"name": "probabilities", "shape": [1, 2], "datatype": "FP32", "data": [0.6, 0.4]},
        ],
    }
    assert _event(url, RESPONSE_TYPE, "id-2", v2_response).status_code == 200
    assert _event(url, REQUEST_TYPE, "id-2", v2_request).status_code == 200
    # A request whose response never comes (it failed) writes nothing.
    assert _event(url, REQUEST_TYPE, "id-3", {"instances": ["lost"]}).status_code == 200
    bad = requests.post(url, data=b"{}", headers={"ce-id": "x", "ce-type": "something.else"}, timeout=10)
    assert bad.status_code == 400
    import time

    deadline = time.monotonic() + 10
    while len(read_records(directory).records) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    records = read_records(directory).records
    by_text = {r["text"]: r for r in records}
    assert set(by_text) == {"Shares fell", "Arsenal won", "Oil prices rose"}
    assert by_text["Arsenal won"]["label"] == "sport" and by_text["Arsenal won"]["confidence"] == pytest.approx(0.8)
    assert by_text["Shares fell"]["model"] == "news" and by_text["Shares fell"]["model_version"] == "7"
    assert by_text["Shares fell"]["request_id"] == "id-1" and by_text["Shares fell"]["ts"].startswith(
        "2026-12-02T11:00"
    )
    assert by_text["Oil prices rose"]["model_version"] == "7"
    assert by_text["Oil prices rose"]["probabilities"]["business"] == pytest.approx(0.6)


def test_the_inference_service_sends_kserve_logger_events_to_the_sink(
    kserve_crd_schemas: dict[tuple[str, str], dict[str, Any]],
) -> None:
    import k8s_tools

    from bertops.errors import BertopsError
    from bertops.k8s import to_manifest
    from components.deploy.inference_service import MODEL_VERSION_LABEL, cluster_deploy_config, inference_service

    sink = "http://bertops-inference-sink.bertops.svc.cluster.local:8080"
    config = cluster_deploy_config("bertops", "Serverless", 0, {}, -1, sink)
    manifest = to_manifest(inference_service("news", "s3://m/1", config, labels={MODEL_VERSION_LABEL: "7"}))
    assert manifest["spec"]["predictor"]["logger"] == {
        "mode": "all",
        "url": sink,
        "metadataAnnotations": [MODEL_VERSION_LABEL],
    }
    # The sink reads the version from the event's ce-annotations, which carry annotations, not labels.
    assert manifest["metadata"]["annotations"][MODEL_VERSION_LABEL] == "7"
    assert k8s_tools.schema_errors(manifest, kserve_crd_schemas) == []
    without = to_manifest(
        inference_service("news", "s3://m/1", cluster_deploy_config("bertops", "Serverless", 0, {}, -1))
    )
    assert "logger" not in without["spec"]["predictor"]
    assert MODEL_VERSION_LABEL not in without["metadata"]["annotations"]
    with pytest.raises(BertopsError, match="inference_logger_url"):
        cluster_deploy_config("bertops", "Serverless", 0, {}, -1, "sink:8080")


def test_server_flags_of_the_inference_log() -> None:
    from serving.server import inference_log_writer, parse_args

    args = parse_args(["--model-dir", "m", "--model-name", "news"])
    assert args.config.log_inference_dir == "" and inference_log_writer(args.config) is None
    with pytest.raises(SystemExit):
        parse_args(["--model-dir", "m", "--model-name", "news", "--log-sample-rate", "1.5"])
