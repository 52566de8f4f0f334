"""bertops.artifacts: the contracts between steps, written and read back."""

import json
from pathlib import Path

import pytest

from bertops.artifacts import (
    TRAINING_FILE,
    load_texts,
    load_tokenized,
    require_saved_model,
    tokenized_max_length,
    training_record,
    write_tokenized_meta,
    write_training_record,
)
from bertops.errors import BertopsError


def test_the_tokenized_dataset_records_its_labels_and_length(tokenized_small: Path, tmp_path: Path) -> None:
    ids, labels, names = load_tokenized(tokenized_small, "test")
    assert len(ids) == len(labels) == len(load_texts(tokenized_small, "test")) == 60
    assert names == json.loads((tokenized_small / "labels.json").read_text())
    assert tokenized_max_length(tokenized_small) == 64 >= max(map(len, ids))
    write_tokenized_meta(tmp_path, ["a", "b"], "some-model", 32)
    assert tokenized_max_length(tmp_path) == 32
    # A dataset tokenized before the length was recorded still reads; it just does not say.
    assert tokenized_max_length(tmp_path / "older") is None


def test_a_training_record_round_trips_and_a_bad_one_is_named(tmp_path: Path) -> None:
    assert training_record(tmp_path) == {}
    write_training_record(tmp_path, {"steps": 3, "history": [{"step": 3, "val_accuracy": 0.5}]})
    assert training_record(tmp_path)["history"][0]["step"] == 3
    (tmp_path / TRAINING_FILE).write_text('{"history": 7}', encoding="utf-8")
    with pytest.raises(BertopsError, match="not a training record"):
        training_record(tmp_path)


def test_a_directory_without_a_model_is_refused(tmp_path: Path, trained_tiny: Path) -> None:
    require_saved_model(trained_tiny)
    with pytest.raises(BertopsError, match=r"not a saved model \(no config.json\); nothing deployed"):
        require_saved_model(tmp_path, "nothing deployed")
