import json
import random
from pathlib import Path

import pytest
import torch

from bertops.batching import length_grouped_batches, pad_batch
from bertops.device import autocast_dtype
from bertops.errors import BertopsError
from components.finetune.finetune import finetune


def test_pad_batch_pads_to_longest_with_mask() -> None:
    ids, mask = pad_batch([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_length_grouped_batches_cover_everything_once_with_similar_lengths() -> None:
    lengths = [random.Random(i).randint(5, 128) for i in range(1000)]
    batches = length_grouped_batches(lengths, 16, random.Random(0))
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(1000))
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    naive = sum(max(lengths[i] for i in flat[k : k + 16]) * len(flat[k : k + 16]) for k in range(0, 1000, 16))
    assert padded < 0.8 * naive


def test_cpu_without_native_bf16_trains_in_fp32() -> None:
    dtype = autocast_dtype(torch.device("cpu"))
    assert dtype in (None, torch.bfloat16)
    assert autocast_dtype(torch.device("cpu"), "fp32") is None


def test_finetune_learns_and_saves_a_loadable_classifier(trained_tiny: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    result = json.loads((trained_tiny / "training.json").read_text())
    assert result["steps"] == 150
    assert result["final_train_loss"] < 1.0  # starts near ln(5) = 1.61
    assert result["validation_accuracy"] > 0.5  # 5 classes: chance is 0.2
    model = AutoModelForSequenceClassification.from_pretrained(trained_tiny)
    assert model.config.id2label[3] == "sports"


def test_invalid_training_settings_are_rejected(tokenized_small: Path, tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(BertopsError, match="batch_size=0"):
        finetune(tokenized_small, tmp_path, str(tiny_model), batch_size=0)
