"""The server's GPU path, forced on a CPU machine: which backend serves, what it reports, warm-up.

No GPU runs these tests. ``torch.cuda`` reports one GPU (the functions torch/cuda/__init__.py's
``is_available`` and ``is_bf16_supported`` read, patched with what PyTorch 2.13 answers on a
capability 9.0 GPU); moves of weights to "cuda" stay on the CPU, since a CPU build of torch
cannot initialise CUDA. What is asserted is the choice the server makes and what it reports.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from kserve.model_repository import ModelRepository

from serving.config import ServingConfig
from serving.http import StrictDataPlane
from serving.kserve_model import TextClassifierModel
from serving.onnx_export import OnnxParityError, export_onnx
from serving.predictor import TextClassifierPredictor

REPO_ROOT = Path(__file__).resolve().parents[1]


def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """``torch.cuda`` reports one capability 9.0 GPU; modules moved to it stay on the CPU.

    ``is_bf16_supported`` (torch/cuda/__init__.py) reads ``is_available``, ``current_device`` and
    ``get_device_properties(...).major``. ``Module.to`` (torch/nn/modules/module.py) would
    initialise CUDA, which a CPU build cannot: a cuda target is swapped for the CPU there.
    """
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: SimpleNamespace(major=9, minor=0))
    module_to = torch.nn.Module.to

    def to_cpu(self: torch.nn.Module, *args: Any, **kwargs: Any) -> torch.nn.Module:
        args = tuple(torch.device("cpu") if isinstance(a, torch.device) and a.type == "cuda" else a for a in args)
        return module_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", to_cpu)


def onnxruntime_gpu(monkeypatch: pytest.MonkeyPatch, cuda_starts: bool) -> list[Any]:
    """onnxruntime-gpu as the CUDA image has it; the providers each session was asked for.

    ``get_available_providers`` lists the providers the build was compiled with, CUDA included,
    whether or not CUDA can start. When the CUDA provider cannot start (a CUDA or cuDNN library
    it cannot load), the session is still built, on the CPU provider alone, and only
    ``get_providers()`` tells (microsoft/onnxruntime#13414, #23372; onnxruntime_pybind_state.cc,
    ``CreateExecutionProviderInstance``). The CPU build here drops CUDA the same way
    (onnxruntime_inference_collection.py, ``check_and_normalize_provider_args``); a session
    whose CUDA provider starts is the real CPU session reporting CUDA first.
    """
    requested: list[Any] = []

    class Session(ort.InferenceSession):
        def __init__(self, path: str, options: Any = None, providers: Any = None, **kwargs: Any) -> None:
            requested.append(providers)
            with pytest.warns(UserWarning, match="CUDAExecutionProvider"):
                super().__init__(path, options, providers=providers, **kwargs)

        def get_providers(self) -> list[str]:
            return ["CUDAExecutionProvider", *super().get_providers()] if cuda_starts else super().get_providers()

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", Session)
    return requested


def v2_metadata(model: TextClassifierModel) -> dict[str, Any]:
    """What ``GET /v2/models/NAME`` answers, from the server's data plane."""
    registry = ModelRepository()
    registry.update(model)
    return asyncio.run(StrictDataPlane(registry).model_metadata(model.name))


# --- 3: ONNX Runtime on the GPU, or PyTorch, and which one is said --------------------------------


def test_onnx_without_its_cuda_provider_serves_with_pytorch_on_the_gpu(
    onnx_model: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A CUDA session that fell back to the CPU provider is not served: PyTorch on the GPU is, and
    the log and the V2 metadata say so."""
    fake_gpu(monkeypatch)
    requested = onnxruntime_gpu(monkeypatch, cuda_starts=False)
    with caplog.at_level("WARNING", logger="serving.backends"):
        predictor = TextClassifierPredictor(onnx_model, ServingConfig(device="cuda"))
    assert requested == [[("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]]
    assert predictor.backend.name == "torch (cuda, bfloat16)"
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith("serving with PyTorch on cuda") and "CUDA execution provider" in warning
    assert "CPUExecutionProvider" in warning
    metadata = v2_metadata(TextClassifierModel("news", predictor, ServingConfig()))
    assert metadata["platform"] == "pytorch_safetensors"


def test_onnx_backend_asked_for_refuses_a_session_without_cuda(
    onnx_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--backend onnx`` means ONNX Runtime on the device asked for, or no server at all."""
    fake_gpu(monkeypatch)
    onnxruntime_gpu(monkeypatch, cuda_starts=False)
    with pytest.raises(ValueError, match=r"backend onnx: onnxruntime could not start its CUDA execution provider"):
        TextClassifierPredictor(onnx_model, ServingConfig(device="cuda", backend="onnx"))


def test_onnx_with_its_cuda_provider_active_serves_and_says_so(
    onnx_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_gpu(monkeypatch)
    requested = onnxruntime_gpu(monkeypatch, cuda_starts=True)
    predictor = TextClassifierPredictor(onnx_model, ServingConfig(device="cuda:1"))
    assert requested[0][0] == ("CUDAExecutionProvider", {"device_id": 1})
    assert predictor.backend.name == "onnxruntime (CUDAExecutionProvider)"
    assert v2_metadata(TextClassifierModel("news", predictor, ServingConfig()))["platform"] == "onnxruntime_onnx"


@pytest.mark.parametrize("variant", ["auto", "int8"])
def test_a_gpu_serves_fp32_whatever_the_int8_variant_says(
    variant: str, onnx_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """int8 is a CPU variant: a version registered with int8 served, or ``--variant int8``, runs
    ``model.onnx`` on the GPU."""
    model_dir = shutil.copytree(onnx_model, tmp_path / "model")
    # Never loaded here; were it, the backend's name would say int8.
    shutil.copy(model_dir / "model.onnx", model_dir / "model.int8.onnx")
    (model_dir / "serving.json").write_text('{"variant": "int8", "reason": "int8: within 0.005 of fp32"}')
    fake_gpu(monkeypatch)
    requested = onnxruntime_gpu(monkeypatch, cuda_starts=True)
    predictor = TextClassifierPredictor(model_dir, ServingConfig(variant=variant))
    assert predictor.backend.name == "onnxruntime (CUDAExecutionProvider)" and predictor.backend.variant == "fp32"
    assert len(requested) == 1
    # On the CPU the same directory serves int8.
    monkeypatch.undo()
    assert TextClassifierPredictor(model_dir, ServingConfig(variant=variant)).backend.variant == "int8"


def test_onnxruntime_comes_from_exactly_one_extra() -> None:
    """onnxruntime and onnxruntime-gpu install the same ``onnxruntime`` module and cannot live
    together: the base install has neither, ``cpu`` brings the CPU build (what ``make install``
    uses), ``cuda`` the GPU build (what the CUDA image uses). onnxruntime-gpu 1.31.1 on PyPI
    requires nvidia-cuda-runtime~=13.0 through its own ``cuda`` extra: torch 2.13's CUDA 13.0."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[\[<>=~! ;]", r, maxsplit=1)[0] for r in requirements}

    extras = project["optional-dependencies"]
    assert not names(project["dependencies"]) & {"onnxruntime", "onnxruntime-gpu"}
    assert "onnxruntime" in names(extras["cpu"]) and "onnxruntime-gpu" not in names(extras["cpu"])
    assert "onnxruntime-gpu" in names(extras["cuda"]) and "onnxruntime" not in names(extras["cuda"])
    assert "onnxruntime-gpu[cuda,cudnn]==1.31.1" in extras["cuda"]
    assert not names(extras["dev"]) & {"onnxruntime", "onnxruntime-gpu"}
    # The `ui` extra (the full mlflow package) must not bring either build in by another road.
    assert not names(extras["ui"]) & {"onnxruntime", "onnxruntime-gpu"}
    assert "pip install --quiet -e '.[dev,cpu,ui]'" in (REPO_ROOT / "Makefile").read_text()


def test_export_without_onnxruntime_is_refused_and_writes_nothing(
    trained_tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed without an extra there is no ONNX Runtime to check an export with: the register
    step gets the refusal it already handles (serving then uses PyTorch)."""
    # Other tests' registrations may have exported into the shared fixture: start without it.
    model_dir = shutil.copytree(trained_tiny, tmp_path / "model", ignore=shutil.ignore_patterns("model.onnx"))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(OnnxParityError, match=r"onnxruntime is not installed"):
        export_onnx(model_dir)
    assert not (model_dir / "model.onnx").exists()


# --- 11: warm-up before ready --------------------------------------------------------------------


class Recording:
    """The predictor's backend, with the shape of every batch it was given."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.name: str = backend.name
        self.platform: str = backend.platform
        self.variant: str = backend.variant
        self.shapes: list[tuple[int, ...]] = []

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        self.shapes.append(input_ids.shape)
        return self.backend.logits(input_ids, attention_mask)


def test_model_is_ready_only_after_a_warm_up_batch(trained_tiny: Path) -> None:
    """KServe answers ``/v2/models/NAME/ready`` from ``Model.ready`` (kserve/model_repository.py,
    ``is_model_ready``) and serves only models ready when it starts (model_server.py,
    ``_register_and_check_atleast_one_model_is_ready``): the warm-up runs in ``load()``, first."""
    config = ServingConfig(backend="torch", max_batch_size=4)
    predictor = TextClassifierPredictor(trained_tiny, config)
    recording = Recording(predictor.backend)
    predictor.backend = recording
    model = TextClassifierModel("news", predictor, config)
    registry = ModelRepository()
    registry.update(model)
    plane = StrictDataPlane(registry)
    assert not asyncio.run(plane.model_ready("news"))
    assert recording.shapes == []
    assert model.load()
    assert asyncio.run(plane.model_ready("news"))
    # A full batch of short texts and one text of the longest length served.
    rows = {shape[0] for shape in recording.shapes}
    widths = {shape[1] for shape in recording.shapes}
    # The longest is the length the model was trained on (the tiny fixture: 64), which its tokenizer records.
    assert config.max_batch_size in rows and max(widths) == predictor.max_length == 64


def test_predictor_imports_with_torch_and_transformers_alone() -> None:
    """The GPU smoke run imports the predictor where only torch, transformers, tokenizers and
    onnxruntime exist: the predictor and its backends load nothing else until asked."""
    code = (
        "import sys, serving.predictor, serving.backends, serving.config; "
        "print(sorted(m for m in ('onnxruntime', 'kserve', 'prometheus_client', 'fastapi') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
