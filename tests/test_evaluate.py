import json
from pathlib import Path

import pytest

from components.evaluate.evaluate import compute_metrics, evaluate_model


def test_compute_metrics_matches_hand_computed_values() -> None:
    result = compute_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], ["a", "b", "c"])
    assert result.accuracy == pytest.approx(3 / 5)
    assert result.confusion_matrix == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert result.per_class["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert result.per_class["b"]["precision"] == pytest.approx(2 / 3)
    assert result.per_class["c"]["f1"] == 0.0
    assert result.macro_f1 == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_evaluate_model_on_test_split(trained_tiny: Path, tokenized_small: Path, tmp_path: Path) -> None:
    result = evaluate_model(trained_tiny, tokenized_small, tmp_path / "evaluation.json")
    assert result.test_rows == 60
    assert sum(map(sum, result.confusion_matrix)) == 60
    assert 0.0 <= result.accuracy <= 1.0
    assert json.loads((tmp_path / "evaluation.json").read_text())["accuracy"] == result.accuracy
