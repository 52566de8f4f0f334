"""serving.scoring: a model directory scored on the held-out splits as the server runs it."""

import json
from pathlib import Path

import pytest

from bertops.artifacts import load_texts
from bertops.errors import BertopsError
from bertops.evaluation import confusion_matrix_png, load_evaluation, save_evaluation
from serving.config import ServingConfig
from serving.predictor import TextClassifierPredictor
from serving.scoring import dataset_columns, evaluate_model


def test_evaluate_model_scores_both_splits(trained_tiny: Path, tokenized_small: Path, tmp_path: Path) -> None:
    result = evaluate_model(trained_tiny, tokenized_small)
    assert result.test.rows == 60 and result.validation.rows == 60
    assert sum(map(sum, result.test.confusion_matrix)) == 60
    assert result.validation.accuracy > 0.5  # the fixture's model learned the topics
    assert 0.0 <= result.test.ece <= 1.0 and result.batch_latency_ms > 0
    assert result.metric("test.accuracy") == result.test.accuracy
    flat = result.flat()
    assert {"test_accuracy", "validation_macro_f1", "test_ece", "batch_latency_ms", "test_f1_sports"} <= set(flat)
    save_evaluation(result, tmp_path / "evaluation.json")
    assert load_evaluation(tmp_path / "evaluation.json") == result
    assert json.loads((tmp_path / "evaluation.json").read_text())["test"]["labels"][3] == "sports"
    confusion_matrix_png(result.test, tmp_path / "confusion.png")
    assert (tmp_path / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_scores_with_the_served_backend_and_its_answers(onnx_model: Path, tokenized_small: Path) -> None:
    # The evaluate step and the server hold the same predictor: ONNX Runtime when model.onnx is there.
    result = evaluate_model(onnx_model, tokenized_small)
    served = TextClassifierPredictor(onnx_model, ServingConfig())
    assert served.backend.name.startswith("onnxruntime")
    labels, _ = served.predict(load_texts(tokenized_small, "test"))
    assert result.test.predicted == labels
    assert len(result.test.predicted) == result.test.rows == 60


def test_evaluate_with_pytorch_gives_the_same_labels_as_onnx(onnx_model: Path, tokenized_small: Path) -> None:
    onnx = evaluate_model(onnx_model, tokenized_small)
    torch = evaluate_model(onnx_model, tokenized_small, ServingConfig(backend="torch"))
    assert torch.test.predicted == onnx.test.predicted
    assert torch.test.accuracy == onnx.test.accuracy


def test_a_dataset_label_the_model_does_not_know_is_named() -> None:
    assert dataset_columns(["b", "a", "x"], ["a", "b"]) == [1, 0, -1]
    with pytest.raises(BertopsError, match=r"does not know the label.*weather"):
        dataset_columns(["a", "b"], ["a", "weather"])
