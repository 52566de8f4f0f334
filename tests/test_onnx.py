"""ONNX export of the tiny fine-tuned model: parity with PyTorch, and how the predictor picks a backend."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from serving.config import ServingConfig
from serving.onnx_export import DEFAULT_TOLERANCE, OnnxParityError, export_onnx
from serving.predictor import TextClassifierPredictor

TEXTS = [
    "Shares rose on Wall Street",
    "The striker scored twice",
    "A new phone with a bigger screen and a faster chip went on sale today. " * 40,
    "",
]


@pytest.fixture(scope="module")
def exported(trained_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny model with its ``model.onnx`` (the session fixture stays untouched)."""
    model_dir = tmp_path_factory.mktemp("onnx") / "model"
    shutil.copytree(trained_tiny, model_dir)
    result = export_onnx(model_dir)
    assert result.path == model_dir / "model.onnx" and result.path.is_file()
    assert 0 <= result.max_abs_diff <= result.tolerance == DEFAULT_TOLERANCE
    return model_dir


def test_onnx_and_torch_backends_agree(exported: Path) -> None:
    onnx = TextClassifierPredictor(exported, ServingConfig(backend="onnx"))
    torch = TextClassifierPredictor(exported, ServingConfig(backend="torch"))
    assert onnx.backend.name.startswith("onnxruntime") and torch.backend.name.startswith("torch")
    onnx_labels, onnx_probs = onnx.predict(TEXTS)
    torch_labels, torch_probs = torch.predict(TEXTS)
    np.testing.assert_allclose(onnx_probs, torch_probs, atol=DEFAULT_TOLERANCE)
    assert onnx_labels == torch_labels


def test_auto_backend_uses_onnx_only_when_the_model_has_it(exported: Path, trained_tiny: Path, tmp_path: Path) -> None:
    assert TextClassifierPredictor(exported).backend.name.startswith("onnxruntime")
    # Registering a model exports model.onnx into its directory, so start from a copy without it.
    plain = shutil.copytree(trained_tiny, tmp_path / "plain", ignore=shutil.ignore_patterns("model.onnx"))
    assert TextClassifierPredictor(plain).backend.name.startswith("torch")
    with pytest.raises(ValueError, match=r"backend onnx: no model\.onnx"):
        TextClassifierPredictor(plain, ServingConfig(backend="onnx"))


def test_export_that_disagrees_with_torch_is_refused_and_removed(trained_tiny: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(trained_tiny, model_dir)
    # No real export is that exact: a negative tolerance forces the refusal path.
    with pytest.raises(OnnxParityError, match="differs from PyTorch"):
        export_onnx(model_dir, tolerance=-1.0)
    assert not (model_dir / "model.onnx").exists()
