"""MLflow registry: versions carry metrics and lineage; bad input registers nothing."""

from pathlib import Path

import pytest

from bertops.errors import BertopsError
from bertops.registry import CHAMPION_ALIAS, open_client, version_metrics
from bertops.registry import model_files
from components.register.register import register_model

LINEAGE = {"data_version": "md5:abc.dir", "git_commit": "deadbeef", "base_model": "tiny", "pipeline_run": "run-1"}


def test_register_records_metrics_params_lineage_and_champion(trained_tiny: Path, state_dir: Path) -> None:
    first = register_model(trained_tiny, "clf", {"accuracy": 0.9}, {"lr": 1e-3}, LINEAGE, True, str(state_dir))
    second = register_model(trained_tiny, "clf", {"accuracy": 0.8}, {"lr": 1e-3}, LINEAGE, False, str(state_dir))
    assert (first.version, second.version) == ("1", "2")
    client = open_client("", state_dir)
    version = client.get_model_version("clf", "2")
    assert version.tags["data_version"] == "md5:abc.dir"
    assert version.tags["git_commit"] == "deadbeef"
    assert "Model card: clf" in (version.description or "")
    assert version_metrics(client, "clf", "2") == {"accuracy": 0.8}
    run = client.get_run(second.run_id)
    assert run.data.metrics["accuracy"] == 0.8 and run.data.params["lr"] == "0.001"
    assert str(client.get_model_version_by_alias("clf", CHAMPION_ALIAS).version) == "1"
    assert (model_files("clf", "2", str(state_dir)) / "config.json").is_file()


def test_register_logs_the_training_curves_to_the_run(trained_tiny: Path, state_dir: Path) -> None:
    import json

    registered = register_model(trained_tiny, "clf", {"accuracy": 0.9}, {}, LINEAGE, False, str(state_dir))
    client = open_client("", state_dir)
    history = json.loads((trained_tiny / "training.json").read_text())["history"]
    logged = client.get_metric_history(registered.run_id, "training.val_accuracy")
    assert [(m.step, m.value) for m in logged] == [(h["step"], h["val_accuracy"]) for h in history]
    assert len(client.get_metric_history(registered.run_id, "training.train_loss")) == len(history)
    assert [a.path for a in client.list_artifacts(registered.run_id, "training")] == ["training/curves.png"]


def test_register_of_a_corrupt_training_record_registers_nothing(
    trained_tiny: Path, tmp_path: Path, state_dir: Path
) -> None:
    import shutil

    model = tmp_path / "model"
    shutil.copytree(trained_tiny, model)
    (model / "training.json").write_text("{not json")
    with pytest.raises(BertopsError, match=r"training.json: not a training record"):
        register_model(model, "clf", {}, {}, LINEAGE, True, str(state_dir))
    client = open_client("", state_dir)
    assert client.search_model_versions("name='clf'") == []


def test_register_of_a_non_model_registers_nothing(tmp_path: Path, state_dir: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(BertopsError, match="not a saved model"):
        register_model(tmp_path / "empty", "clf", {}, {}, LINEAGE, True, str(state_dir))
    client = open_client("", state_dir)
    assert client.search_model_versions("name='clf'") == []
