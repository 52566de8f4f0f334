"""Score a fine-tuned model on held-out data: quality, calibration and batch latency."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bertops.batching import predict_proba
from bertops.device import autocast_dtype, pick_device
from components.tokenize.tokenization import load_texts, load_tokenized

if TYPE_CHECKING:
    import numpy as np
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

EVALUATION_FILE = "evaluation.json"
ECE_BINS = 15
LATENCY_BATCH = 32


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
            for field in ("accuracy", "macro_precision", "macro_recall", "macro_f1", "ece"):
                out[f"{split}_{field}"] = float(getattr(result, field))
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
    """Accuracy, macro and per-class precision/recall/F1, ECE and the confusion matrix."""
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
    )


def _batch_latency_ms(model: PreTrainedModel, ids: list[list[int]], pad_id: int) -> float:
    """Median wall time of one forward pass over a batch of ``LATENCY_BATCH`` test rows (after a warm-up)."""
    import statistics

    batch = (ids * (LATENCY_BATCH // max(len(ids), 1) + 1))[:LATENCY_BATCH]
    if not batch:
        return 0.0
    device = next(model.parameters()).device
    autocast = autocast_dtype(device)
    predict_proba(model, batch, pad_id, LATENCY_BATCH, autocast)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        predict_proba(model, batch, pad_id, LATENCY_BATCH, autocast)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _label_ids(model: PreTrainedModel, labels: list[str]) -> dict[int, int]:
    """Map the model's output ids onto the dataset's label ids, by label name."""
    id2label = {int(i): str(name) for i, name in (model.config.id2label or {}).items()}
    missing = sorted(set(labels) - set(id2label.values()))
    if missing:
        from bertops.errors import BertopsError

        raise BertopsError(f"model does not know the label(s) {', '.join(missing)}; it cannot be compared on this data")
    by_name = {name: i for i, name in enumerate(labels)}
    return {model_id: by_name.get(name, -1) for model_id, name in id2label.items()}


def evaluate_model(
    model_dir: Path, tokenized_dir: Path, max_length: int = 512, batch_size: int = 64
) -> ModelEvaluation:
    """Score the model in ``model_dir`` on the validation and test splits of ``tokenized_dir``.

    The texts are tokenized with the model's own tokenizer (truncated to ``max_length``), so a
    champion trained from another base model is scored on exactly the same rows.
    """
    import numpy as np
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    device = pick_device()
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).to(device)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    pad_id = tokenizer.pad_token_id or 0
    results = {}
    test_ids: list[list[int]] = []
    for split in ("validation", "test"):
        _, y_true, labels = load_tokenized(tokenized_dir, split)
        ids = tokenizer(load_texts(tokenized_dir, split), truncation=True, max_length=max_length)["input_ids"]
        model_probs = predict_proba(model, ids, pad_id, batch_size, autocast_dtype(device)).numpy()
        # Reorder the model's columns into the dataset's label order.
        mapping = _label_ids(model, labels)
        probs = np.zeros((len(ids), len(labels)), dtype=np.float32)
        for model_id, data_id in mapping.items():
            if data_id >= 0:
                probs[:, data_id] = model_probs[:, model_id]
        results[split] = compute_metrics(y_true, probs, labels)
        test_ids = ids
    evaluation = ModelEvaluation(results["validation"], results["test"], _batch_latency_ms(model, test_ids, pad_id))
    log.info(
        "test accuracy %.4f, macro F1 %.4f, ECE %.4f on %d rows; validation accuracy %.4f; %.0f ms per batch of %d",
        evaluation.test.accuracy, evaluation.test.macro_f1, evaluation.test.ece, evaluation.test.rows,
        evaluation.validation.accuracy, evaluation.batch_latency_ms, LATENCY_BATCH,
    )  # fmt: skip
    return evaluation


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
