"""Tokenize the validated splits with the base model's tokenizer.

Texts are truncated to ``max_length`` but not padded: the training and evaluation loops pad
each batch to its own longest row, which saves most of the compute on short texts.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from pathlib import Path

from bertops.artifacts import split_path, write_tokenized_meta
from bertops.dataio import SPLITS, read_table
from bertops.errors import BertopsError
from bertops.model_source import load_tokenizer

log = logging.getLogger(__name__)


def stratified_sample(labels: list[str], n: int, seed: int) -> list[int]:
    """Indices of ``n`` rows drawn class by class in turn, so a small slice still has every class."""
    if n <= 0 or n >= len(labels):
        return list(range(len(labels)))
    by_label: dict[str, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_label[label].append(index)
    rng = random.Random(seed)
    queues = []
    for label in sorted(by_label):
        members = by_label[label]
        rng.shuffle(members)
        queues.append(members)
    picked: list[int] = []
    while len(picked) < n:
        for queue in queues:
            if queue and len(picked) < n:
                picked.append(queue.pop())
    return sorted(picked)


def tokenize_dataset(
    data_dir: Path,
    out_dir: Path,
    base_model: str,
    max_length: int = 128,
    max_train_samples: int = 0,
    max_eval_samples: int = 0,
    seed: int = 42,
) -> dict[str, int]:
    """Write the tokenized dataset (``bertops.artifacts``) to ``out_dir``.

    Labels are numbered in sorted order of the train split's label names. Returns rows per split.
    """
    import pandas as pd

    if max_length < 8:
        raise BertopsError(f"max_length must be at least 8, got {max_length}")
    tokenizer = load_tokenizer(base_model)
    frames = {split: read_table(split_path(data_dir, split)) for split in SPLITS}
    label_names = sorted(frames["train"]["label"].astype(str).unique())
    label_ids = {name: i for i, name in enumerate(label_names)}
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, frame in frames.items():
        cap = max_train_samples if split == "train" else max_eval_samples
        keep = stratified_sample(frame["label"].astype(str).tolist(), cap, seed)
        frame = frame.iloc[keep]
        encoded = tokenizer(frame["text"].astype(str).tolist(), truncation=True, max_length=max_length)
        # The text stays beside its ids: a champion with another tokenizer is scored on the same rows.
        table = pd.DataFrame(
            {
                "input_ids": [list(map(int, ids)) for ids in encoded["input_ids"]],
                "label": frame["label"].map(label_ids),
                "text": frame["text"].astype(str),
            }
        )
        table.to_parquet(split_path(out_dir, split), index=False)
        counts[split] = len(table)
    write_tokenized_meta(out_dir, label_names, base_model, max_length)
    log.info("tokenized %s with max_length %d", counts, max_length)
    return counts
