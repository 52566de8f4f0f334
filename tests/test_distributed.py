"""The same loop under torchrun: two CPU processes with gloo end with identical weights, and only
rank 0 logs progress, writes checkpoints and saves the model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from bertops.artifacts import TRAINING_FILE
from components.finetune import checkpoint

# Runs on every rank. It records which ranks called the checkpoint writer and the model export,
# and dumps each rank's final weights, by wrapping those functions (nothing in the loop knows).
RANK_DRIVER = """
import os, sys
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from components.finetune import checkpoint
from components.finetune.__main__ import main

rank, record = os.environ["RANK"], Path(os.environ["RECORD_DIR"])
models = []
load = AutoModelForSequenceClassification.from_pretrained
AutoModelForSequenceClassification.from_pretrained = lambda *a, **k: models.append(load(*a, **k)) or models[-1]
save, export = checkpoint.save, PreTrainedModel.save_pretrained

def note(what):
    with (record / f"{what}-rank{rank}").open("a") as f:
        f.write("x")

def save_noted(*args, **kwargs):
    note("checkpoint")
    return save(*args, **kwargs)

def export_noted(self, *args, **kwargs):
    note("export")
    return export(self, *args, **kwargs)

checkpoint.save, PreTrainedModel.save_pretrained = save_noted, export_noted
main(sys.argv[1:])
torch.save(models[0].state_dict(), record / f"weights-rank{rank}.pt")
"""


def test_two_ranks_with_gloo_end_identical_and_only_rank0_writes(
    tokenized_small: Path, tiny_model: Path, tmp_path: Path
) -> None:
    record, out = tmp_path / "record", tmp_path / "model"
    record.mkdir()
    driver = tmp_path / "driver.py"
    driver.write_text(RANK_DRIVER)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RECORD_DIR": str(record), "OMP_NUM_THREADS": "1"}
    args = [
        *("--tokenized", str(tokenized_small), "--out", str(out), "--base-model", str(tiny_model)),
        *("--batch-size", "8", "--max-steps", "12", "--learning-rate", "2e-3"),
        *("--checkpoint-every", "5", "--keep-checkpoints", "5", "--eval-every", "6", "--device", "cpu"),
    ]
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(driver), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]

    rank0 = torch.load(record / "weights-rank0.pt")
    rank1 = torch.load(record / "weights-rank1.pt")
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    # ...and they trained: the encoder moved away from the base model's weights.
    query = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(rank0[query], load_file(tiny_model / "model.safetensors")[query])

    # Checkpoints at 5, 10 and the end (12), each written once, by rank 0 alone.
    assert (record / "checkpoint-rank0").read_text() == "xxx"
    assert not (record / "checkpoint-rank1").exists()
    assert (record / "export-rank0").exists() and not (record / "export-rank1").exists()
    assert checkpoint.checkpoint_steps(out.with_name("model.checkpoints")) == [5, 10, 12]

    result = json.loads((out / TRAINING_FILE).read_text())
    assert result["world_size"] == 2 and result["effective_batch_size"] == 16
    assert [h["step"] for h in result["history"]] == [6, 12]
    # Rank 0 alone logs progress.
    assert "finetune[rank 0] INFO trained 12 steps" in run.stderr
    assert "finetune[rank 1] INFO" not in run.stderr
