"""Score a model directory on the held-out splits through the predictor the server runs.

The evaluate step and the promotion gate call ``evaluate_model``; the server calls the same
``TextClassifierPredictor`` with the same backend choice (ONNX Runtime when the model has a
usable ``model.onnx``), the same tokenizer truncation and the same batch plan. So the model
that is evaluated is the model that is served, and ``batch_latency_ms`` times what is served.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bertops.artifacts import load_texts, load_tokenized
from bertops.errors import BertopsError
from bertops.evaluation import Evaluation, ModelEvaluation, choose_variant, compute_metrics
from serving.backends import INT8_FILE
from serving.config import ServingConfig
from serving.predictor import TextClassifierPredictor

log = logging.getLogger(__name__)

# Texts per timed request, the size of a full batch at the server's defaults.
LATENCY_BATCH = 32
LATENCY_REPEATS = 3


def dataset_columns(model_labels: Sequence[str], labels: Sequence[str]) -> list[int]:
    """For each of the model's output columns, the dataset's label id of the same name (-1: none).

    ``BertopsError`` when the dataset has a label the model does not know: it cannot be scored.
    """
    missing = sorted(set(labels) - set(model_labels))
    if missing:
        raise BertopsError(f"model does not know the label(s) {', '.join(missing)}; it cannot be compared on this data")
    by_name = {name: i for i, name in enumerate(labels)}
    return [by_name.get(name, -1) for name in model_labels]


def score_split(predictor: TextClassifierPredictor, tokenized_dir: Path, split: str) -> Evaluation:
    """Metrics of one split, the model's probabilities reordered into the dataset's label order."""
    _, y_true, labels = load_tokenized(tokenized_dir, split)
    model_probs = predictor.probabilities(load_texts(tokenized_dir, split))
    probs = np.zeros((len(y_true), len(labels)), dtype=np.float32)
    for model_id, data_id in enumerate(dataset_columns(predictor.labels, labels)):
        if data_id >= 0:
            probs[:, data_id] = model_probs[:, model_id]
    return compute_metrics(y_true, probs, labels)


def batch_latency_ms(predictor: TextClassifierPredictor, texts: Sequence[str]) -> float:
    """Median wall time of classifying ``LATENCY_BATCH`` texts (tokenizer and forward passes), after a warm-up."""
    batch = (list(texts) * (LATENCY_BATCH // max(len(texts), 1) + 1))[:LATENCY_BATCH]
    predictor.probabilities(batch)
    times = []
    for _ in range(LATENCY_REPEATS):
        started = time.perf_counter()
        predictor.probabilities(batch)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def evaluate_model(model_dir: Path, tokenized_dir: Path, config: ServingConfig | None = None) -> ModelEvaluation:
    """Score the model in ``model_dir`` on the validation and test splits of ``tokenized_dir``.

    The texts are tokenized with the model's own tokenizer, so a champion trained from another
    base model is scored on exactly the same rows. ``config`` defaults to the server's.
    """
    predictor = TextClassifierPredictor(model_dir, config or ServingConfig())
    validation = score_split(predictor, tokenized_dir, "validation")
    test = score_split(predictor, tokenized_dir, "test")
    latency = batch_latency_ms(predictor, load_texts(tokenized_dir, "test"))
    evaluation = ModelEvaluation(validation, test, latency, variant=predictor.backend.variant)
    log.info(
        "test accuracy %.4f, macro F1 %.4f, ECE %.4f on %d rows; validation accuracy %.4f; %.0f ms per %d texts on %s",
        test.accuracy, test.macro_f1, test.ece, test.rows, validation.accuracy, latency, LATENCY_BATCH,
        predictor.backend.name,
    )  # fmt: skip
    return evaluation


def evaluate_variants(
    model_dir: Path, tokenized_dir: Path, int8_tolerance: float, config: ServingConfig | None = None
) -> ModelEvaluation:
    """The evaluate step's scores: fp32's, and int8's when ``model.int8.onnx`` is there; the variant
    to serve is chosen by ``bertops.evaluation.choose_variant`` and its metrics are the result's."""
    config = config or ServingConfig()
    fp32 = evaluate_model(model_dir, tokenized_dir, dataclasses.replace(config, variant="fp32"))
    int8 = None
    if (model_dir / INT8_FILE).is_file():
        # A CPU variant: scored on the CPU, where it would serve, whatever device fp32 ran on.
        int8 = evaluate_model(model_dir, tokenized_dir, dataclasses.replace(config, variant="int8", device="cpu"))
    chosen = choose_variant(fp32, int8, int8_tolerance, f"no {INT8_FILE} (quantize none, or its export failed)")
    log.info("serving variant %s", chosen.variant_reason)
    return chosen
