"""The evaluation contract: metrics of a model on the held-out splits, how they are computed and stored.

Written by the evaluate step, read by candidate selection, the promotion gate and registration
(which draws the winner's confusion matrix for its MLflow run, as evaluate does for the Kubeflow UI).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

ECE_BINS = 15
# Metrics where smaller is better; every other metric is maximized.
LOWER_IS_BETTER = ("ece", "batch_latency_ms")
# The two forms of a fine-tuned model a server can run: as trained (fp32 ONNX, or PyTorch with
# autocast on a GPU) and ONNX Runtime's dynamic int8 quantization of the fp32 graph (CPU only).
VARIANTS = ("fp32", "int8")
# Beside a registered model: which variant its servers run, and why (``serving_record``).
SERVING_FILE = "serving.json"
# The metrics both variants must keep within the tolerance for int8 to be served.
VARIANT_METRICS = ("accuracy", "macro_f1")
# Metrics are ratios of row counts; a drop exactly at the tolerance must not fail on rounding.
ROUNDING = 1e-9


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
    # The variant these metrics are of, why it is the one served, and every scored variant's test
    # metrics (``choose_variant``); evaluations saved before int8 existed load as fp32.
    variant: str = "fp32"
    variant_reason: str = ""
    variants: dict[str, dict[str, float]] = field(default_factory=dict)

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
        for variant, metrics in self.variants.items():
            out.update({f"{variant}_{name}": value for name, value in metrics.items()})
        return out

    def serving_record(self) -> dict[str, str]:
        """What ``SERVING_FILE`` holds: the variant to serve and the reason."""
        return {"variant": self.variant, "reason": self.variant_reason}


def choose_variant(
    fp32: ModelEvaluation, int8: ModelEvaluation | None, tolerance: float, without_int8: str = ""
) -> ModelEvaluation:
    """The evaluation of the variant to serve, with both variants' test metrics and the reason.

    int8 is served only when its test accuracy and its test macro F1 are each at most
    ``tolerance`` below fp32's (better is fine); otherwise, or without an int8 evaluation
    (``without_int8`` says why), fp32 is.
    """
    if not tolerance >= 0:
        raise ValueError(f"int8_tolerance must be >= 0, got {tolerance!r}")
    scored = {"fp32": fp32} if int8 is None else {"fp32": fp32, "int8": int8}
    variants = {
        name: {f"test_{m}": e.metric(f"test.{m}") for m in VARIANT_METRICS} | {"batch_latency_ms": e.batch_latency_ms}
        for name, e in scored.items()
    }
    if int8 is None:
        return replace(
            fp32, variant="fp32", variant_reason=f"fp32: {without_int8 or 'no int8 model'}", variants=variants
        )
    drops = {m: fp32.metric(f"test.{m}") - int8.metric(f"test.{m}") for m in VARIANT_METRICS}
    compared = ", ".join(
        f"test {m} {int8.metric(f'test.{m}'):.4f} vs fp32 {fp32.metric(f'test.{m}'):.4f} ({-drop:+.4f})"
        for m, drop in drops.items()
    )
    failing = [m for m, drop in drops.items() if drop > tolerance + ROUNDING]
    if failing:
        reason = f"fp32: int8 {compared}; {' and '.join(failing)} more than {tolerance} below fp32"
        return replace(fp32, variant="fp32", variant_reason=reason, variants=variants)
    reason = f"int8: {compared}, within {tolerance} of fp32"
    return replace(int8, variant="int8", variant_reason=reason, variants=variants)


def read_serving_record(model_dir: Path) -> dict[str, str] | None:
    """``model_dir``'s ``SERVING_FILE`` (``None`` when it has none: registered before variants existed).

    ``ValueError`` naming the file when it is not a JSON object with a known ``variant``.
    """
    path = model_dir / SERVING_FILE
    if not path.is_file():
        return None
    try:
        record: Any = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(record, dict) or record.get("variant") not in VARIANTS:
        raise ValueError(f"{path}: 'variant' must be one of {', '.join(VARIANTS)}, got {record!r}")
    return {"variant": str(record["variant"]), "reason": str(record.get("reason", ""))}


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
    """Read an evaluation written by ``save_evaluation`` (one saved before variants existed is fp32's)."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    return ModelEvaluation(
        Evaluation(**raw["validation"]),
        Evaluation(**raw["test"]),
        float(raw["batch_latency_ms"]),
        variant=str(raw.get("variant", "fp32")),
        variant_reason=str(raw.get("variant_reason", "")),
        variants={str(k): {str(n): float(v) for n, v in m.items()} for k, m in raw.get("variants", {}).items()},
    )


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
