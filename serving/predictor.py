"""The text-classification predictor: texts in, label names and probabilities out.

Plain Python (no KServe) so tests and benchmarks call it directly; ``serving.kserve_model``
wraps it for the server.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from bertops.batching import predict_proba
from bertops.device import autocast_dtype, pick_device

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)


class TextClassifierPredictor:
    """A fine-tuned sequence classifier loaded from a ``save_pretrained`` directory."""

    def __init__(self, model_dir: str | Path, device: str = "auto", max_length: int = 512, batch_size: int = 32):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.device = pick_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).to(self.device).eval()
        self.max_length = min(max_length, self.tokenizer.model_max_length)
        self.batch_size = batch_size
        # Serving precision follows the hardware: bf16/fp16 on GPUs, fp32 on CPUs without native bf16.
        self.autocast: torch.dtype | None = autocast_dtype(self.device)
        id2label = self.model.config.id2label
        self.labels: list[str] = [str(id2label[i]) for i in range(self.model.config.num_labels)]

    def predict(self, texts: list[str]) -> tuple[list[str], np.ndarray]:
        """Label name and class probabilities (``[len(texts), len(labels)]``) for each text.

        Texts longer than ``max_length`` tokens are truncated (the head of the text is kept).
        """
        if not texts:
            raise ValueError("no texts to classify")
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise ValueError(f"instance {bad[0]} is {type(texts[bad[0]]).__name__}, expected a string")
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        probs = predict_proba(
            self.model, encoded, self.tokenizer.pad_token_id or 0, self.batch_size, self.autocast
        ).numpy()
        return [self.labels[i] for i in probs.argmax(axis=1)], probs
