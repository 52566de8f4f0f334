"""bertops.evaluation: the metrics every step compares models by, computed by hand here."""

import numpy as np
import pytest

from bertops.evaluation import compute_metrics, expected_calibration_error


def _one_hot_probs(predicted: list[int], k: int, confidence: float = 1.0) -> np.ndarray:
    probs = np.full((len(predicted), k), (1 - confidence) / (k - 1))
    probs[np.arange(len(predicted)), predicted] = confidence
    return probs


def test_compute_metrics_matches_hand_computed_values() -> None:
    result = compute_metrics([0, 0, 1, 1, 2], _one_hot_probs([0, 1, 1, 1, 0], 3), ["a", "b", "c"])
    assert result.accuracy == pytest.approx(3 / 5)
    assert result.confusion_matrix == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert result.per_class["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert result.per_class["b"]["precision"] == pytest.approx(2 / 3)
    assert result.per_class["c"]["f1"] == 0.0
    assert result.macro_f1 == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert result.macro_recall == pytest.approx((0.5 + 1.0 + 0.0) / 3)


def test_expected_calibration_error() -> None:
    truth = np.array([0, 0, 0, 0])
    # Always 100% sure and right half the time: ECE 0.5. 75% sure and right 3 times in 4: 0.
    assert expected_calibration_error(_one_hot_probs([0, 0, 1, 1], 2), truth) == pytest.approx(0.5)
    assert expected_calibration_error(_one_hot_probs([0, 0, 0, 1], 2, 0.75), truth) == pytest.approx(0.0)
