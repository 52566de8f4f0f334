"""Checkpoint and resume: a run killed with SIGKILL right after a checkpoint resumes from it and ends
exactly where an uninterrupted run with the same seed ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bertops.artifacts import TRAINING_FILE
from bertops.errors import BertopsError
from components.finetune import checkpoint
from components.finetune.config import LoopConfig
from components.finetune.finetune import train

# The real CLI, with checkpoint.save wrapped so that the process SIGKILLs itself the moment the
# checkpoint of KILL_AT_STEP is on disk: a deterministic crash at the worst-timed place.
KILLING_DRIVER = """
import os, signal, sys
from components.finetune import checkpoint
from components.finetune.__main__ import main

kill_at = int(os.environ["KILL_AT_STEP"])
save = checkpoint.save

def save_then_die(directory, step, state, keep=1):
    path = save(directory, step, state, keep)
    if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return path

checkpoint.save = save_then_die
main(sys.argv[1:])
"""


def cli_args(tokenized: Path, model: Path, out: Path) -> list[str]:
    # 13 batches of 16 per epoch, 2 micro-batches per step: 7 steps an epoch. The kill at step 15
    # lands mid-epoch and between evaluations, so the data position, the RNG state (dropout) and
    # the running loss all have to come back from the checkpoint.
    return [
        *("--tokenized", str(tokenized), "--out", str(out), "--base-model", str(model)),
        *("--max-steps", "24", "--grad-accumulation", "2", "--learning-rate", "2e-3"),
        *("--checkpoint-every", "5", "--eval-every", "10"),
    ]


@pytest.mark.slow
def test_sigkilled_run_resumes_and_matches_an_uninterrupted_run(
    tokenized_small: Path, tiny_model: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KILL_AT_STEP": "15"}
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    # The two independent runs go side by side to halve the wait.
    uninterrupted = subprocess.Popen(
        [sys.executable, "-m", "components.finetune", *cli_args(tokenized_small, tiny_model, whole)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    crash = subprocess.run(
        [sys.executable, "-c", KILLING_DRIVER, *cli_args(tokenized_small, tiny_model, killed)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert crash.returncode == -signal.SIGKILL, crash.stderr[-2000:]
    checkpoints = killed.with_name("killed.checkpoints")
    assert checkpoint.checkpoint_steps(checkpoints) == [15]  # keep_checkpoints=1 removed step 10
    assert not (killed / TRAINING_FILE).exists()

    resumed = subprocess.run(
        [sys.executable, "-m", "components.finetune", *cli_args(tokenized_small, tiny_model, killed)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr
    _, err = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, err[-2000:]

    a, b = load_file(whole / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys()
    # Tolerance: none needed on one machine (same kernels, same thread count, RNG restored);
    # 1e-6 leaves room for a different BLAS build between the two runs.
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    whole_result = json.loads((whole / TRAINING_FILE).read_text())
    killed_result = json.loads((killed / TRAINING_FILE).read_text())
    assert killed_result["resumed_from_step"] == 15
    assert killed_result["steps"] == whole_result["steps"] == 24
    assert [h["step"] for h in killed_result["history"]] == [10, 20, 24]
    for mine, theirs in zip(killed_result["history"], whole_result["history"], strict=True):
        assert mine == pytest.approx(theirs, abs=1e-6)
    assert checkpoint.checkpoint_steps(checkpoints) == [24]


def test_finished_run_started_again_only_exports(tokenized_small: Path, tiny_model: Path, tmp_path: Path) -> None:
    config = LoopConfig(base_model=str(tiny_model), max_steps=6, learning_rate=2e-3, checkpoint_every=0)
    first = train(tokenized_small, tmp_path / "model", config)
    again = train(tokenized_small, tmp_path / "model", config)
    assert again.resumed_from_step == 6 and again.steps == 6
    assert again.history == first.history
    assert again.validation_accuracy == first.validation_accuracy


def test_checkpoint_of_other_settings_is_refused(tokenized_small: Path, tiny_model: Path, tmp_path: Path) -> None:
    config = LoopConfig(base_model=str(tiny_model), max_steps=4, learning_rate=2e-3)
    train(tokenized_small, tmp_path / "model", config)
    config.learning_rate = 1e-3
    with pytest.raises(BertopsError, match=r"other settings \(learning_rate\)"):
        train(tokenized_small, tmp_path / "model", config)


def test_checkpoint_writes_are_atomic_and_pruned(tmp_path: Path) -> None:
    directory = tmp_path / "ckpt"
    # A writer killed mid-write leaves only a temporary directory, which is not a checkpoint.
    (directory / f"{checkpoint.TMP_PREFIX}{checkpoint.PREFIX}00000009-123").mkdir(parents=True)
    assert checkpoint.load_latest(directory) is None
    for step in (5, 10, 15):
        checkpoint.save(directory, step, {"step": step, "w": torch.full((2,), float(step))}, keep=2)
    assert checkpoint.checkpoint_steps(directory) == [10, 15]
    assert [p.name for p in directory.iterdir() if p.name.startswith(checkpoint.TMP_PREFIX)] == []
    latest = checkpoint.load_latest(directory)
    assert latest is not None and latest["step"] == 15 and latest["w"].tolist() == [15.0, 15.0]
    checkpoint.save_best(directory, {"w": torch.ones(1)})
    checkpoint.save_best(directory, {"w": torch.zeros(1)})
    best = checkpoint.load_best(directory)
    assert best is not None and best["w"].tolist() == [0.0]
