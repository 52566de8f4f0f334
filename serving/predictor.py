"""The text-classification predictor: texts in, label names and probabilities out.

Plain Python (no KServe) so tests and benchmarks call it directly; ``serving.kserve_model``
wraps it for the server, which hands it the texts of many requests at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from serving.backends import Backend, load_backend
from serving.config import ServingConfig

log = logging.getLogger(__name__)

# What one more forward pass costs, in padded tokens: a split into two passes must save at
# least this much padding to be worth it.
FORWARD_OVERHEAD_TOKENS = 32
# The warm-up's text: repeated up to the longest input for the long pass.
WARM_UP_TEXT = "Warm-up before the first request."


def plan_batches(lengths: Sequence[int], max_rows: int, max_tokens: int) -> list[list[int]]:
    """Indices of ``lengths`` cut into forward passes that waste little on padding.

    Sequences are sorted by length and cut into runs, each padded to its longest member, so
    that padded tokens plus ``FORWARD_OVERHEAD_TOKENS`` per pass is smallest (dynamic
    programming over the cut points), with at most ``max_rows`` rows and ``max_tokens`` padded
    tokens per pass (a single longer sequence still gets a pass of its own).
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    sorted_lengths = [lengths[i] for i in order]
    n = len(order)
    best = [0.0] + [float("inf")] * n
    start_of = [0] * (n + 1)
    for end in range(1, n + 1):
        width = sorted_lengths[end - 1]
        for start in range(end - 1, max(end - max_rows, 0) - 1, -1):
            rows = end - start
            if rows > 1 and rows * width > max_tokens:
                break
            cost = best[start] + FORWARD_OVERHEAD_TOKENS + rows * width
            if cost < best[end]:
                best[end], start_of[end] = cost, start
    passes: list[list[int]] = []
    end = n
    while end > 0:
        passes.append(order[start_of[end] : end])
        end = start_of[end]
    return passes[::-1]


def pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids, attention_mask)`` as int64 arrays padded to the longest sequence."""
    width = max(len(s) for s in sequences)
    ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in fp32, stable for large logits."""
    shifted = logits.astype(np.float32) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


class TextClassifierPredictor:
    """A fine-tuned sequence classifier loaded from a ``save_pretrained`` directory.

    Runs on ONNX Runtime when the directory has a ``model.onnx`` the configuration allows,
    otherwise on PyTorch (see ``serving.backends.load_backend``).
    """

    def __init__(self, model_dir: str | Path, config: ServingConfig | None = None):
        from transformers import AutoConfig, AutoTokenizer

        self.config = config or ServingConfig()
        model_dir = Path(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model_config = AutoConfig.from_pretrained(str(model_dir))
        self.labels: list[str] = [str(model_config.id2label[i]) for i in range(model_config.num_labels)]
        # The model cannot see past its position embeddings, whatever the flag says.
        limits = [self.config.max_length, self.tokenizer.model_max_length]
        limits += [getattr(model_config, "max_position_embeddings", None) or self.config.max_length]
        self.max_length = int(min(limits))
        self.pad_id = int(self.tokenizer.pad_token_id or 0)
        self.backend: Backend = load_backend(model_dir, self.config)
        log.info(
            "model %s: %d labels, %s, max %d tokens",
            model_dir.name,
            len(self.labels),
            self.backend.name,
            self.max_length,
        )

    def warm_up(self) -> float:
        """Run the shapes requests bring once before serving; the seconds it took.

        The first forward passes pay one-off costs: on a GPU cuBLAS and cuDNN handles, kernel
        selection and the caching allocator's first blocks; in ONNX Runtime its memory arena.
        One full batch of short texts and one text of ``max_length`` tokens pay them here, so
        the first request does not, and a backend that cannot run fails the start, not a request.
        """
        start = time.perf_counter()
        texts = [WARM_UP_TEXT] * self.config.max_batch_size + [WARM_UP_TEXT * self.max_length]
        self.probabilities(texts)
        seconds = time.perf_counter() - start
        log.info("warm-up: %d texts in %.0f ms on %s", len(texts), seconds * 1000, self.backend.name)
        return seconds

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, truncated to ``max_length`` tokens (the head of the text is kept)."""
        encoded = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=self.max_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return [list(ids) for ids in encoded["input_ids"]]

    def predict_ids(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """Class probabilities ``[len(sequences), len(labels)]`` (fp32), in input order."""
        out = np.empty((len(sequences), len(self.labels)), dtype=np.float32)
        for rows in plan_batches([len(s) for s in sequences], self.config.max_batch_size, self.config.max_batch_tokens):
            ids, mask = pad([sequences[i] for i in rows], self.pad_id)
            out[rows] = softmax(self.backend.logits(ids, mask))
        return out

    def predict(self, texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Label name and class probabilities (``[len(texts), len(labels)]``) for each text."""
        if not texts:
            raise ValueError("no texts to classify")
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise ValueError(f"instance {bad[0]} is {type(texts[bad[0]]).__name__}, expected a string")
        probs = self.probabilities(texts)
        return self.label_names(probs), probs

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities ``[len(texts), len(labels)]`` (fp32): ``encode``, then ``predict_ids``."""
        return self.predict_ids(self.encode(texts))

    def label_names(self, probs: np.ndarray) -> list[str]:
        """The most probable label of each row."""
        return [self.labels[i] for i in probs.argmax(axis=1)]
