"""A registered model directory as an MLflow model: ``mlflow.pyfunc.load_model`` and ``mlflow models serve``
run the project's own predictor on it.

The register step writes ``MLmodel`` (with a signature), an input example, the Python
environment and the code of ``serving`` and ``bertops`` (``code/``) beside the model's files,
so one directory is both what the model server loads (``config.json``, the tokenizer,
``model.onnx``) and a pyfunc model whose loader is this module. Nothing moves: the
InferenceService's ``storageUri`` and the local server read the same directory as before.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

LOADER_MODULE = "serving.mlflow_model"
# The packages whose code the loader needs, copied into the model's ``code/`` folder.
CODE_PACKAGES = ("serving", "bertops")
# What the predictor imports at run time; pinned to this environment's versions.
REQUIREMENTS = ("numpy", "pandas", "transformers", "tokenizers", "onnxruntime", "torch")
INPUT_EXAMPLE = ["The text to classify, in the language and style of the training data."]


def probability_column(label: str) -> str:
    """The output column with the probability of ``label``."""
    return f"prob_{label}"


def input_texts(model_input: Any) -> list[str]:
    """The texts of a pyfunc input: a list or array of strings, one string, or a DataFrame/Series
    (its ``text`` column, else its first)."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        column = "text" if "text" in model_input.columns else model_input.columns[0]
        model_input = model_input[column]
    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, pd.Series | np.ndarray):
        return list(model_input.tolist())
    if isinstance(model_input, Sequence):
        return list(model_input)
    raise ValueError(f"expected texts (a list of strings or a DataFrame with a text column), got {type(model_input)}")


class TextClassifierModel:
    """The pyfunc implementation: texts in, a DataFrame out with ``label``, ``score`` (its probability)
    and one ``prob_<label>`` column per class."""

    def __init__(self, model_dir: str | Path) -> None:
        from serving.predictor import TextClassifierPredictor

        self.predictor = TextClassifierPredictor(model_dir)

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        """Classify the texts of ``model_input`` (see ``input_texts``)."""
        import pandas as pd

        labels, probs = self.predictor.predict(input_texts(model_input))
        columns: dict[str, Any] = {"label": labels, "score": probs.max(axis=1).astype(np.float64)}
        for index, name in enumerate(self.predictor.labels):
            columns[probability_column(name)] = probs[:, index].astype(np.float64)
        return pd.DataFrame(columns)


def _load_pyfunc(path: str) -> TextClassifierModel:
    """MLflow's entry point: ``path`` is the model directory itself (the MLmodel names no data path)."""
    return TextClassifierModel(path)


def _labels(model_dir: Path) -> list[str]:
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    id2label = config.get("id2label") or {}
    return [str(id2label[key]) for key in sorted(id2label, key=int)]


def signature(model_dir: Path) -> Any:
    """Input: one string column; output: the predicted label, its probability, one probability per class."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema, TensorSpec

    outputs: list[ColSpec | TensorSpec] = [ColSpec(DataType.string, "label"), ColSpec(DataType.double, "score")]
    outputs += [ColSpec(DataType.double, probability_column(label)) for label in _labels(model_dir)]
    return ModelSignature(inputs=Schema([ColSpec(DataType.string)]), outputs=Schema(outputs))


def _requirements() -> list[str]:
    pinned = []
    for name in REQUIREMENTS:
        try:
            # Without the local label (torch's "+cpu"): a package index knows the release, not the build.
            pinned.append(f"{name}=={metadata.version(name).split('+')[0]}")
        except metadata.PackageNotFoundError:
            continue
    return pinned


def write_mlflow_files(model_dir: Path, out_dir: Path) -> None:
    """Write the MLflow model files for ``model_dir`` into ``out_dir`` (created; must not exist yet).

    Logged to the same artifact folder as the model's files, they make that folder a pyfunc
    model. The requirements are this environment's versions, not inferred (inferring them
    would load the model).
    """
    import mlflow

    with tempfile.TemporaryDirectory() as scratch:
        code = []
        for package in CODE_PACKAGES:
            source = Path(__file__).resolve().parents[1] / package
            shutil.copytree(source, Path(scratch) / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            code.append(str(Path(scratch) / package))
        mlflow.pyfunc.save_model(
            path=str(out_dir),
            loader_module=LOADER_MODULE,
            code_paths=code,
            signature=signature(model_dir),
            input_example=INPUT_EXAMPLE,
            pip_requirements=_requirements(),
        )
