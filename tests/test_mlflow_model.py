"""MLflow as its users meet it: the champion loads with ``mlflow.pyfunc``, ``bertops ui`` serves the
registry, ``bertops models`` shows aliases, and a pipeline run is a parent run with a child run per candidate."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bertops import models
from bertops.registry import CHAMPION_ALIAS, model_files, open_client, resolve_tracking_uri
from bertops.tracking import CANDIDATE_TAG, PARENT_TAG, CandidateRun, start_candidate_run, start_pipeline_run
from components.register.register import Submission, register_model

NAME = "clf"
LINEAGE = {"data_version": "md5:0123456789abcdef0123456789abcdef.dir", "git_commit": "c0ffee", "base_model": "tiny",
           "pipeline_run": "run-1"}  # fmt: skip
LONG_METRIC = "test_f1_a_label_whose_name_is_long"


@pytest.fixture(scope="module")
def registry(trained_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state directory with two versions of ``NAME``: 1 (the champion) and 2."""
    state = tmp_path_factory.mktemp("registry") / "state"
    metrics = {"test_accuracy": 0.9, LONG_METRIC: 0.75}
    register_model(Submission(trained_tiny, NAME, metrics, {"epochs": 1.0}, LINEAGE), True, str(state))
    register_model(Submission(trained_tiny, NAME, {"test_accuracy": 0.8}, {}, LINEAGE), False, str(state))
    return state


def test_the_champion_loads_with_mlflow_pyfunc_and_predicts(registry: Path, trained_tiny: Path, tmp_path: Path) -> None:
    import mlflow
    from mlflow.types import DataType

    from serving.predictor import TextClassifierPredictor

    mlflow.set_tracking_uri(resolve_tracking_uri("", registry))
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@{CHAMPION_ALIAS}")
    texts = ["Shares rose as the bank reported record profits.", "The striker scored twice in the final."]
    predicted = model.predict(texts)
    labels, probs = TextClassifierPredictor(trained_tiny).predict(texts)
    # The project's own predictor, wrapped: the same labels and probabilities.
    assert predicted["label"].tolist() == labels
    names = json.loads((trained_tiny / "config.json").read_text())["id2label"].values()
    columns = [f"prob_{name}" for name in names]
    assert predicted[columns].to_numpy() == pytest.approx(probs, abs=1e-6)
    assert predicted["score"].tolist() == pytest.approx(probs.max(axis=1).tolist(), abs=1e-6)
    assert model.metadata.get_input_schema().input_types() == [DataType.string]
    assert model.metadata.get_output_schema().input_names() == ["label", "score", *columns]
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{NAME}@{CHAMPION_ALIAS}", dst_path=str(tmp_path)))
    example = json.loads((local / "input_example.json").read_text())
    assert model.predict(example)["label"].tolist()[0] in labels + list(names)
    # The same folder is still what the model servers load.
    assert (model_files(NAME, "1", str(registry)) / "config.json").is_file()


def test_models_list_shows_the_champion_and_show_takes_an_alias(
    registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.main import main

    assert [(row.version, row.champion) for row in models.list_versions(NAME, str(registry))] == [
        ("2", False),
        ("1", True),
    ]
    assert main(["models", "list", "--model-name", NAME, "--state-dir", str(registry)]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["1"][1] == CHAMPION_ALIAS and rows["2"][1] == "-"

    shown = models.show_version(NAME, CHAMPION_ALIAS, str(registry))
    assert shown.splitlines()[0] == f"{NAME} version 1  [{CHAMPION_ALIAS}]"
    assert shown == models.show_version(NAME, "1", str(registry))
    # A metric name longer than the column never runs into its value.
    assert [line.split() for line in shown.splitlines() if LONG_METRIC in line] == [[LONG_METRIC, "0.7500"]]
    assert main(["models", "show", "no-such-alias", "--model-name", NAME, "--state-dir", str(registry)]) == 2
    assert "has no version or alias 'no-such-alias'" in capsys.readouterr().err


def _get_json(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return dict(json.load(response))
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def test_bertops_ui_serves_the_registry_and_its_champion(registry: Path, tmp_path: Path) -> None:
    from components.deploy.deploy import free_port

    port = free_port()
    log = tmp_path / "ui.log"
    with log.open("w") as out:
        ui = subprocess.Popen(
            [sys.executable, "-m", "cli", "ui", "--state-dir", str(registry), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/registered-models/get?name={NAME}"
    try:
        found = None
        # A bound on the wait, not a timing check: it only stops a server that never comes up.
        deadline = time.monotonic() + 600
        while found is None and ui.poll() is None and time.monotonic() < deadline:
            time.sleep(1)
            found = _get_json(url)
        assert found is not None, log.read_text()
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=60)
    model = found["registered_model"]
    assert model["name"] == NAME
    assert {a["alias"]: a["version"] for a in model["aliases"]} == {CHAMPION_ALIAS: "1"}
    assert f"MLflow UI on http://127.0.0.1:{port}" in log.read_text()


def test_a_pipeline_run_is_a_parent_run_with_a_child_run_per_candidate(
    tokenized_small: Path, tiny_model: Path, tmp_path: Path, state_dir: Path
) -> None:
    from components.finetune.config import LoopConfig
    from components.finetune.finetune import train

    parent = start_pipeline_run("pipeline-1", str(state_dir), "")
    params = {"base_model": str(tiny_model), "epochs": 1.0, "max_steps": 6, "learning_rate": 2e-3}
    tracked = start_candidate_run(parent, "fast", params, str(state_dir), "")
    client = open_client("", state_dir)
    seen: list[int] = []

    def log_and_check(entry: dict[str, float]) -> None:
        tracked.log_evaluation(entry)
        # Logged while it trains: the point is in the run before the next step.
        seen.append(len(client.get_metric_history(tracked.run_id, "training.val_accuracy")))

    config = LoopConfig(base_model=str(tiny_model), batch_size=16, max_steps=6, learning_rate=2e-3, eval_every=2)
    train(tokenized_small, tmp_path / "model", config, log_and_check)
    tracked.end()
    assert seen == [1, 2, 3]

    submission = Submission(tmp_path / "model", NAME, {"test_accuracy": 0.5}, {"epochs": 1.0, "max_length": 64},
                            LINEAGE, run_id=tracked.run_id, parent_run_id=parent, data_source=str(tmp_path))  # fmt: skip
    registered = register_model(submission, True, str(state_dir))
    assert registered.run_id == tracked.run_id
    assert client.get_model_version(NAME, registered.version).run_id == tracked.run_id
    child = client.get_run(tracked.run_id)
    assert child.data.tags[PARENT_TAG] == parent and child.data.tags[CANDIDATE_TAG] == "fast"
    assert child.data.params["epochs"] == "1" and child.data.params["max_steps"] == "6"
    # register adds none of the points logged during training a second time.
    assert [m.step for m in client.get_metric_history(tracked.run_id, "training.val_accuracy")] == [2, 4, 6]
    artifacts = {a.path for a in client.list_artifacts(tracked.run_id, "model")}
    assert {"model/MLmodel", "model/config.json", "model/training.json"} <= artifacts
    pipeline = client.get_run(parent)
    assert pipeline.info.status == "FINISHED" and pipeline.data.tags["winner_run_id"] == tracked.run_id
    # The pipeline's run ends at registration, after its candidate's run began and ended.
    assert pipeline.info.start_time <= child.info.start_time <= child.info.end_time <= pipeline.info.end_time
    for run in (child, pipeline):
        assert run.inputs is not None
        (data,) = run.inputs.dataset_inputs
        assert data.dataset.digest == "0123456789abcdef0123456789abcdef"


def test_an_unreachable_tracking_server_costs_a_warning_not_the_training(
    tokenized_small: Path, tiny_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from components.deploy.deploy import free_port
    from components.finetune.config import LoopConfig
    from components.finetune.finetune import train

    nowhere = f"http://127.0.0.1:{free_port()}"
    caplog.set_level(logging.WARNING, logger="bertops.tracking")
    assert start_pipeline_run("pipeline-2", str(tmp_path), nowhere) == ""
    assert start_candidate_run("a-run-id", "fast", {}, str(tmp_path), nowhere).client is None
    # A server that goes away after the run started: one warning, then training without tracking.
    lost = CandidateRun(open_client(nowhere, tmp_path), "a-run-id")
    config = LoopConfig(base_model=str(tiny_model), batch_size=16, max_steps=4, learning_rate=2e-3, eval_every=1)
    result = train(tokenized_small, tmp_path / "model", config, lost.log_evaluation)
    assert result.steps == 4 and lost.client is None
    warnings = [r.getMessage() for r in caplog.records if "training goes on" in r.getMessage()]
    assert len(warnings) == 2, warnings
