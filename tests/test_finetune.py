import json
import logging
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from bertops.artifacts import CURVES_FILE, ONNX_FILE, tokenized_max_length, training_record
from bertops.batching import length_grouped_batches, pad_batch, shard_steps
from bertops.config import FinetuneConfig
from bertops.device import autocast_dtype
from bertops.errors import BertopsError
from components.finetune import checkpoint
from components.finetune.__main__ import parser
from components.finetune.config import LoopConfig
from components.finetune.finetune import train
from components.finetune.launch import finetune_step


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
    # Evaluated after every epoch (13 steps of 16 rows) and at the end; the curves drawn from that.
    assert [h["step"] for h in result["history"]] == [*range(13, 150, 13), 150]
    assert result["history"][-1]["val_accuracy"] == result["validation_accuracy"]
    assert (trained_tiny / CURVES_FILE).read_bytes().startswith(b"\x89PNG")
    assert result["final_train_loss"] < 1.0  # starts near ln(5) = 1.61
    assert result["validation_accuracy"] > 0.5  # 5 classes: chance is 0.2
    model = AutoModelForSequenceClassification.from_pretrained(trained_tiny)
    assert model.config.id2label[3] == "sports"


def test_invalid_training_settings_are_rejected(tokenized_small: Path, tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(BertopsError, match="batch_size=0"):
        train(tokenized_small, tmp_path, LoopConfig(base_model=str(tiny_model), batch_size=0))
    with pytest.raises(BertopsError, match="grad_accumulation=0, precision='int8'"):
        train(tokenized_small, tmp_path, LoopConfig(base_model=str(tiny_model), grad_accumulation=0, precision="int8"))


def test_shard_steps_give_each_rank_its_share_of_the_same_batches() -> None:
    batches = [[i] for i in range(7)]
    assert shard_steps(batches, 0, 1) == [[[i]] for i in range(7)]
    # Two ranks, two micro-batches per step: 4 batches a step, wrapped round to fill the last one.
    rank0, rank1 = shard_steps(batches, 0, 2, 2), shard_steps(batches, 1, 2, 2)
    assert rank0 == [[[0], [2]], [[4], [6]]]
    assert rank1 == [[[1], [3]], [[5], [0]]]
    assert sorted(b[0] for step in rank0 + rank1 for b in step) == [0, 0, 1, 2, 3, 4, 5, 6]


def test_early_stopping_keeps_the_best_weights(tokenized_small: Path, tiny_model: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    # A learning rate too small to change any prediction: the first evaluation stays the best.
    config = LoopConfig(base_model=str(tiny_model), max_steps=40, learning_rate=1e-7, eval_every=4, patience=2)
    result = train(tokenized_small, tmp_path / "m", config)
    assert result.stopped_early and result.steps == 12 and result.best_step == 4
    assert [h["step"] for h in result.history] == [4, 8, 12]
    assert result.validation_accuracy == result.history[0]["val_accuracy"]
    best = checkpoint.load_best(tmp_path / "m.checkpoints")
    assert best is not None
    exported = load_file(tmp_path / "m" / "model.safetensors")
    assert all(torch.equal(exported[k], best[k]) for k in exported)


def test_gradient_accumulation_counts_samples_per_optimizer_step(
    tokenized_small: Path, tiny_model: Path, tmp_path: Path
) -> None:
    config = LoopConfig(base_model=str(tiny_model), batch_size=8, grad_accumulation=3, max_steps=5)
    result = train(tokenized_small, tmp_path / "m", config)
    assert result.effective_batch_size == 24 and result.train_samples == 120
    assert result.tokens_per_second > 0


def test_cli_flags_cover_every_setting() -> None:
    args = vars(parser().parse_args(["--tokenized", "t", "--out", "o", "--compile", "true", "--patience", "3"]))
    assert args.pop("tokenized") == Path("t") and args.pop("out") == Path("o")
    config = LoopConfig(**args)
    assert config.compile is True and config.patience == 3 and config.batch_size == LoopConfig().batch_size


def test_the_step_leaves_a_model_with_its_onnx_graph_and_training_length(
    tokenized_small: Path, tiny_model: Path, tmp_path: Path
) -> None:
    settings = FinetuneConfig(base_model=str(tiny_model), max_steps=2, eval_every=0)
    result = finetune_step(tokenized_small, tmp_path / "model", settings)
    model_dir = tmp_path / "model"
    assert (model_dir / ONNX_FILE).is_file()
    tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    # tokenized_small was cut to 64 tokens: the served model truncates there too.
    assert tokenizer_config["model_max_length"] == tokenized_max_length(tokenized_small) == 64
    record = training_record(model_dir)
    assert result.onnx_max_abs_diff is not None and record["onnx_max_abs_diff"] == result.onnx_max_abs_diff
    assert record["onnx_max_abs_diff"] < 1e-3
    # Checkpoints beside a per-run artifact are removed once the model is saved.
    assert not (tmp_path / "model.checkpoints").exists()


def test_an_onnx_graph_that_fails_its_parity_check_is_left_out(
    tokenized_small: Path,
    tiny_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from serving import onnx_export

    def refuse(model_dir: Path) -> None:
        raise onnx_export.OnnxParityError(f"{model_dir}: ONNX Runtime differs from PyTorch by 1.0e+00")

    monkeypatch.setattr(onnx_export, "export_onnx", refuse)
    settings = FinetuneConfig(base_model=str(tiny_model), max_steps=1, eval_every=0)
    result = finetune_step(tokenized_small, tmp_path / "model", settings)
    assert result.onnx_max_abs_diff is None and training_record(tmp_path / "model")["onnx_max_abs_diff"] is None
    assert not (tmp_path / "model" / ONNX_FILE).exists()
    assert "no ONNX model" in caplog.text


def test_side_by_side_candidates_split_the_cpus_and_the_log_says_so(
    tokenized_small: Path, tiny_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: Any
) -> None:
    """Two candidates training at once each take half the CPUs (at least one thread), and the step log says so."""
    from bertops.cpu import available_cpus

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    caplog.set_level(logging.INFO, logger="components.finetune.finetune")
    try:
        train(tokenized_small, tmp_path / "m", LoopConfig(base_model=str(tiny_model), max_steps=1, cpu_sharing=2))
        share = max(1, available_cpus() // 2)
        assert torch.get_num_threads() == share
    finally:
        torch.set_num_threads(before)
    expected = f"training on the CPU with {share} thread(s): {available_cpus()} CPU(s) available, 2 candidate(s)"
    assert expected in caplog.text
