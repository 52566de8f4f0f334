"""The real pipeline through kfp.local on a small slice: validate -> ... -> a live endpoint."""

from pathlib import Path

import pytest
import requests

from bertops import endpoints
from bertops.artifacts import load_texts
from bertops.config import PipelineConfig
from bertops.evaluation import load_evaluation
from bertops.registry import open_client, version_metrics
from pipelines.run_local import run_local

pytestmark = pytest.mark.e2e


def test_pipeline_runs_end_to_end_and_serves(bbc_data: Path, state_dir: Path) -> None:
    config = PipelineConfig().replace(
        data_path=str(bbc_data),
        state_dir=str(state_dir),
        max_train_samples=240,
        max_eval_samples=100,
        max_length=64,
        max_steps=30,
        min_accuracy=0.3,
        model_name="e2e-news",
    )
    result = run_local(config, git_commit="test-commit")

    assert result.version == "1"
    assert result.validation == "64/64 expectations passed"  # no drift reference yet in a fresh state dir
    client = open_client("", state_dir)
    version = client.get_model_version("e2e-news", "1")
    assert version.tags["git_commit"] == "test-commit"
    assert version.tags["data_version"] == "untracked"  # a copy outside DVC is labelled as such
    assert version.tags["base_model"] == config.train.base_model
    accuracy = version_metrics(client, "e2e-news", "1")["test_accuracy"]
    assert accuracy > 0.5, f"held-out accuracy {accuracy} is not clearly above chance (0.2)"

    endpoint = endpoints.get("e2e-news", state_dir)
    assert endpoint.model_version == "1" and endpoint.url.startswith("http://127.0.0.1:")
    v1 = requests.post(
        endpoint.v1_predict_url, json={"instances": ["The striker scored in the cup final."]}, timeout=60
    )
    assert v1.status_code == 200 and v1.json()["predictions"][0]["label"] in (
        "business",
        "entertainment",
        "politics",
        "sports",
        "tech",
    )
    body = {
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["Parliament votes on the budget."]}]
    }
    v2 = requests.post(endpoint.v2_infer_url, json=body, timeout=60)
    assert v2.status_code == 200
    assert {o["name"] for o in v2.json()["outputs"]} == {"label", "probabilities"}
    _evaluated_labels_are_the_served_labels(endpoint, client, str(version.run_id), state_dir)


def _evaluated_labels_are_the_served_labels(
    endpoint: endpoints.Endpoint, client: object, run_id: str, state_dir: Path
) -> None:
    """The evaluate step scored the model as it is served: ONNX Runtime, same label for every test row."""
    metadata = requests.get(f"{endpoint.url}/v2/models/{endpoint.name}", timeout=30).json()
    assert metadata["platform"].startswith("onnxruntime"), metadata
    evaluation = load_evaluation(Path(client.download_artifacts(run_id, "evaluation.json", str(state_dir))))  # type: ignore[attr-defined]
    (test_split,) = state_dir.glob("pipeline_root/**/tokenized/test.parquet")
    texts = load_texts(test_split.parent, "test")
    served: list[str] = []
    for start in range(0, len(texts), 32):
        answer = requests.post(endpoint.v1_predict_url, json={"instances": texts[start : start + 32]}, timeout=120)
        assert answer.status_code == 200, answer.text
        served += [p["label"] for p in answer.json()["predictions"]]
    assert len(served) == evaluation.test.rows == 100
    assert served == evaluation.test.predicted


def test_failed_validation_stops_the_pipeline_before_training(bbc_data: Path, state_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "data"
    broken.mkdir()
    for split in ("train", "validation", "test"):
        (broken / f"{split}.jsonl").write_bytes((bbc_data / f"{split}.jsonl").read_bytes())
    with (broken / "test.jsonl").open("a") as handle:
        handle.write('{"text": "A new topic entirely", "label": "weather"}\n')
    config = PipelineConfig().replace(data_path=str(broken), state_dir=str(state_dir), model_name="e2e-broken")
    from bertops.errors import BertopsError

    with pytest.raises(
        BertopsError,
        match=r"validate: .*test split, column 'label': label in \{.*\} failed \[expect_column_values_to_be_in_set\]",
    ):
        run_local(config)
    client = open_client("", state_dir)
    assert client.search_registered_models() == []
    assert endpoints.list_endpoints(state_dir) == []


def test_a_model_below_the_gate_is_registered_but_not_deployed(
    bbc_data: Path, state_dir: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Also what the run shows: a progress line per candidate, no third-party chatter, a plain log."""
    import logging

    # As `bertops` sets it: kfp.local's INFO records are made, and must not reach the terminal.
    caplog.set_level(logging.INFO)
    config = PipelineConfig().replace(
        data_path=str(bbc_data),
        state_dir=str(state_dir),
        max_train_samples=32,
        max_eval_samples=20,
        max_length=32,
        max_steps=1,
        min_accuracy=0.99,
        model_name="e2e-gated",
    )
    result = run_local(config)
    client = open_client("", state_dir)
    assert client.get_model_version("e2e-gated", result.version).aliases == []
    assert endpoints.list_endpoints(state_dir) == []

    shown = capsys.readouterr().out
    # One step each: one progress report per candidate, prefixed with its id.
    progress = [line for line in shown.splitlines() if line.startswith("finetune ")]
    assert sorted(line.split()[1] for line in progress) == ["base", "higher-lr"], shown
    assert all(" 1/1  loss " in line and " samples/s  ETA 0:00" in line for line in progress), progress
    for chatter in ("ephemeral docs site", "font cache", "Streamed logs", "Got executor_input"):
        assert chatter not in shown
    # kfp.local's orchestrator logs on the root logger: its bookkeeping goes to the log file only.
    assert not any("expression selector" in r.getMessage() for r in caplog.records)
    log = result.log_file.read_text()
    assert "Applying expression selector" in log and "\x1b" not in log
