"""The evaluation contract: metrics of a model on the held-out splits, how they are computed and stored.

Written by the evaluate step, read by candidate selection, the promotion gate and registration
(which draws the winner's confusion matrix for its MLflow run, as evaluate does for the Kubeflow UI).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

ECE_BINS = 15
# Metrics where smaller is better; every other metric is maximized.
LOWER_IS_BETTER = ("ece", "batch_latency_ms")


@dataclass
class Evaluation:
    """Metrics of one split; ``confusion_matrix[i][j]`` counts true class ``i`` predicted as ``j``."""

    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    ece: float
    rows: int
    labels: list[str]
    per_class: dict[str, dict[str, float]]
    confusion_matrix: list[list[int]]
    # The predicted label of each row, in the split's order: what the served model answers for it.
    predicted: list[str] = field(default_factory=list)
    # The mean top-class probability: the drift monitor's reference for live traffic (NaN: not recorded).
    mean_confidence: float = float("nan")
    # Each row's true label and the probability of its predicted label, in the same order: what the
    # error analysis shows (evaluations written before these fields load with them empty).
    actual: list[str] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)


@dataclass
class ModelEvaluation:
    """A model scored on the validation and test splits, with its batch latency."""

    validation: Evaluation
    test: Evaluation
    batch_latency_ms: float

    def metric(self, name: str) -> float:
        """A metric by dotted name: ``test.accuracy``, ``validation.macro_f1``, ``batch_latency_ms``."""
        if name == "batch_latency_ms":
            return self.batch_latency_ms
        split, _, field = name.partition(".")
        value = getattr(getattr(self, split, None), field, None)
        if not isinstance(value, float | int):
            raise KeyError(f"unknown metric {name!r} (use e.g. validation.accuracy, test.macro_f1, test.ece)")
        return float(value)

    def flat(self) -> dict[str, float]:
        """Scalar metrics as ``{"test_accuracy": ..., "validation_macro_f1": ..., ...}`` for the UI and registry."""
        out = {"batch_latency_ms": self.batch_latency_ms}
        for split in ("validation", "test"):
            result: Evaluation = getattr(self, split)
            for name in ("accuracy", "macro_precision", "macro_recall", "macro_f1", "ece"):
                out[f"{split}_{name}"] = float(getattr(result, name))
            if split == "test":
                for name, scores in result.per_class.items():
                    for key in ("precision", "recall", "f1"):
                        out[f"test_{key}_{name}"] = float(scores[key])
        return out


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: the gap between confidence and accuracy, averaged over equal-width confidence bins."""
    import numpy as np

    if len(probs) == 0:
        return 0.0
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            ece += members.mean() * abs(confidence[members].mean() - correct[members].mean())
    return float(ece)


def compute_metrics(y_true: list[int], probs: np.ndarray, labels: list[str]) -> Evaluation:
    """Accuracy, macro and per-class precision/recall/F1, ECE, the confusion matrix and each row's
    true label, predicted label and confidence."""
    import numpy as np

    truth = np.asarray(y_true, dtype=np.int64)
    predicted_ids = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
    k = len(labels)
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (truth, predicted_ids), 1)
    tp = np.diag(matrix).astype(float)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(k), where=actual > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(actual[i]),
        }
        for i, name in enumerate(labels)
    }
    total = int(matrix.sum())
    return Evaluation(
        accuracy=float(tp.sum() / total) if total else 0.0,
        macro_precision=float(precision.mean()) if k else 0.0,
        macro_recall=float(recall.mean()) if k else 0.0,
        macro_f1=float(f1.mean()) if k else 0.0,
        ece=expected_calibration_error(probs, truth),
        rows=total,
        labels=labels,
        per_class=per_class,
        confusion_matrix=matrix.tolist(),
        predicted=[labels[i] for i in predicted_ids.tolist()],
        mean_confidence=float(probs.max(axis=1).mean()) if len(probs) else float("nan"),
        actual=[labels[i] for i in truth.tolist()],
        confidence=[round(float(p), 6) for p in (probs.max(axis=1) if len(probs) else [])],
    )


def metric_direction(metric: str) -> int:
    """+1 when a larger value of ``metric`` is better, -1 when a smaller one is."""
    return -1 if metric.rsplit(".", 1)[-1] in LOWER_IS_BETTER else 1


def save_evaluation(evaluation: ModelEvaluation, path: Path) -> None:
    """Write an evaluation as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(evaluation), indent=2), encoding="utf-8")


def load_evaluation(path: Path) -> ModelEvaluation:
    """Read an evaluation written by ``save_evaluation``."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    return ModelEvaluation(Evaluation(**raw["validation"]), Evaluation(**raw["test"]), float(raw["batch_latency_ms"]))


def confusion_matrix_png(result: Evaluation, path: Path, title: str = "Confusion matrix (test split)") -> None:
    """Draw the confusion matrix as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(4.0, 0.9 * len(result.labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(result.confusion_matrix, cmap="Blues")
    ax.set_xticks(range(len(result.labels)), result.labels, rotation=45, ha="right")
    ax.set_yticks(range(len(result.labels)), result.labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    peak = max((max(row) for row in result.confusion_matrix), default=0)
    for i, row in enumerate(result.confusion_matrix):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
