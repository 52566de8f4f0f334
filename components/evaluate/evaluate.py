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
from bertops.artifacts import load_texts, load_tokenized
from bertops.evaluation import ModelEvaluation, compute_metrics

if TYPE_CHECKING:
    import numpy as np
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

LATENCY_BATCH = 32


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
