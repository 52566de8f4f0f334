"""The local deploy step against real servers on real ports: it reports only the server it started,
keeps the old server until the new one can take over, and keeps the endpoint's URL across
promote and rollback.

Two registered versions of one tiny classifier tell which server answers: version 1 predicts
the labels ``old-a``/``old-b``, version 2 ``new-a``/``new-b``.
"""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from bertops import endpoints
from bertops.endpoints import Endpoint
from bertops.errors import BertopsError
from components.deploy.deploy import deploy_local, error_line
from components.register.register import Submission, register_model

NAME = "news"
LINEAGE = {"data_version": "md5:x", "git_commit": "c", "base_model": "tiny", "pipeline_run": "r"}


def _classifier(tiny_model: Path, out: Path, labels: list[str]) -> Path:
    """A randomly initialised two-label classifier on the tiny BERT, with ``labels`` as its label names."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig.from_pretrained(tiny_model)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    BertForSequenceClassification(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def registry(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A state dir whose registry holds version 1 (the champion), 2, and 3 (a model that fails to load) of NAME."""
    state = tmp_path_factory.mktemp("deploy") / "state"
    models = tmp_path_factory.mktemp("models")
    for version, prefix in (("1", "old"), ("2", "new")):
        model = _classifier(tiny_model, models / version, [f"{prefix}-a", f"{prefix}-b"])
        registered = register_model(Submission(model, NAME, {}, {}, LINEAGE), version == "1", str(state))
        assert registered.version == version
    # Version 3 cannot load: its weights file is not one.
    broken = _classifier(tiny_model, models / "3", ["bad-a", "bad-b"])
    (broken / "model.safetensors").write_bytes(b"not a model")
    assert register_model(Submission(broken, NAME, {}, {}, LINEAGE), False, str(state)).version == "3"
    yield state
    for endpoint in endpoints.list_endpoints(state):
        endpoints.delete(endpoint.name, state)


def _labels(url: str) -> set[str]:
    """The label names the server at ``url`` answers with."""
    answer = requests.post(f"{url}/v1/models/{NAME}:predict", json={"instances": ["Oil prices fell"]}, timeout=60)
    assert answer.status_code == 200, answer.text
    return set(answer.json()["predictions"][0]["probabilities"])


class _ReadyEverywhere(http.server.BaseHTTPRequestHandler):
    """Someone else's server: 200 to every GET, readiness probes included."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def stranger() -> Iterator[int]:
    """The port of another program's HTTP server on loopback, which answers ready for any model."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ReadyEverywhere)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_a_port_someone_else_holds_fails_the_deploy_and_keeps_the_old_server(registry: Path, stranger: int) -> None:
    first = deploy_local(NAME, "1", str(registry))
    assert _labels(first.url) == {"old-a", "old-b"}

    with pytest.raises(BertopsError) as failure:
        deploy_local(NAME, "2", str(registry), port=stranger)
    assert "[Errno 98]" in str(failure.value) and f"127.0.0.1:{stranger}" in str(failure.value)
    # Nothing changed: the record, and the old server, which still answers.
    assert endpoints.get(NAME, registry) == first
    assert endpoints.serves(first)
    assert _labels(first.url) == {"old-a", "old-b"}
    # Port 0: the server bound a port the kernel picked and reported it; that is the URL recorded.
    assert f"listening on 127.0.0.1:{first.port}" in Path(first.log_file).read_text()


def _serving(registry: Path) -> Endpoint:
    """The endpoint of NAME, deployed with version 1 if there is none yet."""
    try:
        return endpoints.get(NAME, registry)
    except BertopsError:
        return deploy_local(NAME, "1", str(registry))


def test_a_version_that_cannot_load_leaves_the_server_on_the_same_port_serving(registry: Path) -> None:
    serving = _serving(registry)
    labels = _labels(serving.url)
    with pytest.raises(BertopsError, match=r"exited with \d+: .*SafetensorError"):
        deploy_local(NAME, "3", str(registry), port=int(serving.url.rsplit(":", 1)[1]))
    assert endpoints.get(NAME, registry) == serving
    assert _labels(serving.url) == labels


def _bertops(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *argv], capture_output=True, text=True, timeout=600)


def test_promote_and_rollback_keep_the_url_and_answer_from_the_new_version(registry: Path) -> None:
    first = _serving(registry)
    assert first.model_version == "1"
    flags = ("--model-name", NAME, "--state-dir", str(registry))

    promoted = _bertops("models", "promote", "2", *flags)
    assert promoted.returncode == 0, promoted.stderr
    second = endpoints.get(NAME, registry)
    assert (second.url, second.model_version) == (first.url, "2")
    assert _labels(first.url) == {"new-a", "new-b"}
    assert not endpoints.pid_alive(first.pid)
    assert f"endpoint {NAME} now serves version 2 at {first.url} (same URL" in promoted.stdout

    rolled_back = _bertops("models", "rollback", *flags)
    assert rolled_back.returncode == 0, rolled_back.stderr
    third = endpoints.get(NAME, registry)
    assert (third.url, third.model_version) == (first.url, "1")
    assert _labels(first.url) == {"old-a", "old-b"}
    assert not endpoints.pid_alive(second.pid)


def test_the_error_line_is_the_cause_not_the_last_line() -> None:
    log = "\n".join(
        [
            '{"level": "INFO", "message": "model news: 2 labels"}',
            '{"level": "ERROR", "message": "[Errno 98] error while attempting to bind on address: address in use"}',
            '{"level": "INFO", "message": "Waiting for application shutdown."}',
            "Traceback (most recent call last):",
            '  File "x.py", line 1, in <module>',
        ]
    )
    assert error_line(log) == "[Errno 98] error while attempting to bind on address: address in use"
    traceback = "Traceback (most recent call last):\n  File 'x.py'\nOSError: no model here\n  during shutdown"
    assert error_line(traceback) == "OSError: no model here"
    assert error_line("") == "(nothing in its log)"


def test_predict_classifies_a_file_in_batches_as_a_table_or_json_lines(registry: Path, tmp_path: Path) -> None:
    import json

    serving = _serving(registry)
    labels = _labels(serving.url)
    # 70 texts: more than the server takes in one request (64), so only batches get them all through.
    texts = [f"Report number {i} on markets, football and elections" for i in range(70)]
    plain = tmp_path / "texts.txt"
    plain.write_text("\n".join(texts[:3]) + "\n\n" + "\n".join(texts[3:]) + "\n")
    table = _bertops("predict", "--file", str(plain), "--endpoint", NAME, "--state-dir", str(registry))
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["LINE", "LABEL", "CONFIDENCE", "TEXT"] and len(rows) == 70
    # Aligned columns: each row's label starts where the header's LABEL does, its text where TEXT does.
    label_at, text_at = header.index("LABEL"), header.index("TEXT")
    assert {row[label_at:].split()[0] for row in rows} <= labels
    assert all(row[text_at:].startswith("Report number ") for row in rows)
    assert [int(row.split()[0]) for row in rows] == [1, 2, 3, *range(5, 72)]  # line 4 is blank

    records = tmp_path / "texts.csv"
    records.write_text("id,body\n" + "".join(f'{i},"{text}"\n' for i, text in enumerate(texts[:5])))
    answer = _bertops(
        "predict", "--file", str(records), "--column", "body", "--batch-size", "2", "--json",
        "--endpoint", NAME, "--state-dir", str(registry),
    )  # fmt: skip
    assert answer.returncode == 0, answer.stderr
    lines = [json.loads(line) for line in answer.stdout.splitlines()]
    assert [(r["line"], r["text"]) for r in lines] == list(zip(range(2, 7), texts[:5], strict=True))
    assert all(r["label"] in labels and r["confidence"] == r["probabilities"][r["label"]] for r in lines)

    one_request = _bertops(
        "predict", "--file", str(plain), "--batch-size", "70", "--endpoint", NAME, "--state-dir", str(registry)
    )
    assert one_request.returncode == 2
    assert f"answered 400 for {plain} lines 1-71: " in one_request.stderr
    assert "70 texts in one request; the limit is 64" in one_request.stderr
