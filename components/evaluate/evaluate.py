"""Score a fine-tuned model on the held-out test split."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from bertops.batching import predict_proba
from bertops.device import autocast_dtype, pick_device
from components.tokenize.tokenization import load_tokenized

log = logging.getLogger(__name__)

EVALUATION_FILE = "evaluation.json"


@dataclass
class Evaluation:
    """Test-split metrics; ``confusion_matrix[i][j]`` counts true class ``i`` predicted as ``j``."""

    accuracy: float
    macro_f1: float
    test_rows: int
    labels: list[str]
    per_class: dict[str, dict[str, float]]
    confusion_matrix: list[list[int]]


def compute_metrics(y_true: list[int], y_pred: list[int], labels: list[str]) -> Evaluation:
    """Accuracy, per-class precision/recall/F1, macro F1 and the confusion matrix."""
    import numpy as np

    k = len(labels)
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
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
        macro_f1=float(f1.mean()) if k else 0.0,
        test_rows=total,
        labels=labels,
        per_class=per_class,
        confusion_matrix=matrix.tolist(),
    )


def evaluate_model(
    model_dir: Path, tokenized_dir: Path, out_file: Path | None = None, batch_size: int = 64
) -> Evaluation:
    """Predict the test split with the model in ``model_dir``; optionally write the result as JSON."""
    from transformers import AutoModelForSequenceClassification

    ids, y_true, labels = load_tokenized(tokenized_dir, "test")
    device = pick_device()
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).to(device)
    pad_id = model.config.pad_token_id or 0
    probs = predict_proba(model, ids, pad_id, batch_size, autocast_dtype(device))
    result = compute_metrics(y_true, probs.argmax(dim=-1).tolist(), labels)
    if out_file is not None:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(json.dumps(asdict(result), indent=2), encoding="utf-8")
    log.info("test accuracy %.4f, macro F1 %.4f on %d rows", result.accuracy, result.macro_f1, result.test_rows)
    return result
