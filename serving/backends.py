"""The two ways to run the classifier: ONNX Runtime (``model.onnx``) or eager PyTorch.

Both take padded ``input_ids`` and ``attention_mask`` (int64 numpy arrays) and return fp32
logits, so the predictor does not care which one it holds.

Each names itself twice: ``name`` for people (logs: runtime, device, precision) and ``platform``
for V2 model metadata, in the Triton convention ``<runtime>_<model format>``. ``onnxruntime_onnx``
is Triton's own name; Triton has none for eager PyTorch (its ``pytorch_libtorch`` is TorchScript),
so the torch backend says ``pytorch_safetensors``: PyTorch running the weights that
``save_pretrained`` writes.

Each also says which variant of the model it runs (``bertops.evaluation.VARIANTS``): ``fp32`` (the
weights as trained, or ``model.onnx``) or ``int8`` (``model.int8.onnx``, ONNX Runtime's dynamic
quantization, CPU only).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from bertops.evaluation import SERVING_FILE, read_serving_record
from serving.config import ServingConfig

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "logits"


class Backend(Protocol):
    """Something that turns a padded batch of token ids into logits."""

    name: str
    platform: str
    variant: str

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """``[rows, num_labels]`` fp32 logits for a padded batch."""
        ...


class TorchBackend:
    """Eager PyTorch in inference mode; autocast to bf16/fp16 where the hardware has it.

    Autocast rather than casting the weights keeps softmax and layer norms in fp32, as the
    evaluate step does, so served probabilities match the evaluated ones.
    """

    platform = "pytorch_safetensors"
    variant = "fp32"

    def __init__(self, model_dir: Path, device: torch.device, precision: str = "auto", threads: int = 0):
        import torch
        from transformers import AutoModelForSequenceClassification

        from bertops.device import autocast_dtype

        if threads:
            torch.set_num_threads(threads)
        self.device = device
        self.model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).to(device).eval()
        # On a CPU ``auto`` serves fp32, what evaluate scored (int8 is the gated CPU speed-up);
        # bf16 there is an explicit choice.
        self.autocast = None if device.type == "cpu" and precision == "auto" else autocast_dtype(device, precision)
        self.name = f"torch ({device.type}, {str(self.autocast or 'fp32').removeprefix('torch.')})"

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        non_blocking = self.device.type == "cuda"
        ids = torch.from_numpy(input_ids).to(self.device, non_blocking=non_blocking)
        mask = torch.from_numpy(attention_mask).to(self.device, non_blocking=non_blocking)
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None),
        ):
            out = self.model(input_ids=ids, attention_mask=mask).logits
        return out.float().cpu().numpy()


class OnnxBackend:
    """ONNX Runtime on the CUDA execution provider on GPUs, the CPU one otherwise.

    ``provider`` is the execution provider the session actually runs on. ONNX Runtime does not
    fail when the CUDA provider cannot start (CUDA or cuDNN libraries it cannot load, an
    unsupported GPU): it logs the failure and builds the session on the CPU provider alone
    (microsoft/onnxruntime#13414, #23372), so a caller that asked for CUDA must check it.
    """

    platform = "onnxruntime_onnx"

    def __init__(self, path: Path, device: torch.device, threads: int = 0, variant: str = "fp32"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning worker threads keep cores busy between runs; on a small shared machine they
        # take CPU from the event loop and the tokenizer (measured: slower, not faster, there).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers: list[Any] = ["CPUExecutionProvider"]
        if device.type == "cuda":
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.provider: str = self.session.get_providers()[0]
        self.variant = variant
        self.name = (
            f"onnxruntime ({self.provider})" if variant == "fp32" else f"onnxruntime ({self.provider}, {variant})"
        )

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        (out,) = self.session.run([OUTPUT_NAME], {"input_ids": input_ids, "attention_mask": attention_mask})
        return np.asarray(out, dtype=np.float32)


def onnx_unusable(model_dir: Path, device: torch.device, file: str = ONNX_FILE) -> str | None:
    """Why the ONNX backend cannot serve ``model_dir``'s ``file`` on ``device``; ``None`` when it can."""
    if not (model_dir / file).is_file():
        return f"no {file} in {model_dir}"
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed"
    if device.type == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        return "this onnxruntime build has no CUDA execution provider (install onnxruntime-gpu)"
    return None


def served_variant(model_dir: Path, config: ServingConfig, device: torch.device) -> str:
    """The variant ``load_backend`` serves: ``fp32`` or ``int8``.

    ``auto`` takes the model's ``serving.json`` (fp32 without one). int8 is a CPU variant: on a
    GPU the fp32 model serves whatever the variant says. When int8 cannot run (no
    ``model.int8.onnx``, no onnxruntime, ``--backend torch``), ``--variant int8`` refuses to
    start (``ValueError``) and a serving.json that says int8 serves fp32 with a warning.
    """
    variant = config.variant
    if variant == "auto":
        record = read_serving_record(model_dir)
        variant = record["variant"] if record else "fp32"
    if variant != "int8":
        return "fp32"
    if device.type == "cuda":
        log.info("serving fp32 on %s: int8 is a CPU variant", device)
        return "fp32"
    if config.backend == "torch":
        reason: str | None = "backend torch runs the fp32 weights"
    else:
        reason = onnx_unusable(model_dir, device, INT8_FILE)
    if reason is None:
        return "int8"
    if config.variant == "int8":
        raise ValueError(f"variant int8: {reason}")
    log.warning("serving fp32, not the int8 variant that %s names: %s", SERVING_FILE, reason)
    return "fp32"


def load_backend(model_dir: Path, config: ServingConfig) -> Backend:
    """The backend ``config.backend`` asks for: ``auto`` takes ONNX Runtime whenever it can.

    The int8 variant (``served_variant``) runs ``model.int8.onnx`` on ONNX Runtime's CPU provider.

    On a GPU, ONNX Runtime counts only when its session runs on the CUDA execution provider;
    otherwise ``auto`` serves with PyTorch on the GPU and says why in a warning, and ``onnx``
    refuses to start.
    """
    # Imports torch first, which loads its CUDA and cuDNN libraries into the process: that is how
    # onnxruntime-gpu finds them in the CUDA image (onnxruntime/__init__.py, ``preload_dlls``).
    from bertops.cpu import available_cpus
    from bertops.device import pick_device

    device = pick_device(config.device)
    # The libraries' own default is every core of the machine, the node's in a pod, not its CPU limit.
    threads = config.threads or available_cpus()
    if served_variant(model_dir, config, device) == "int8":
        return OnnxBackend(model_dir / INT8_FILE, device, threads, "int8")
    if config.backend in ("auto", "onnx"):
        reason = onnx_unusable(model_dir, device)
        if reason is None:
            onnx = OnnxBackend(model_dir / ONNX_FILE, device, threads)
            if device.type != "cuda" or onnx.provider == "CUDAExecutionProvider":
                return onnx
            reason = (
                f"onnxruntime could not start its CUDA execution provider, the session runs on {onnx.provider} "
                "(onnxruntime's own log line above says why, usually a CUDA or cuDNN library it cannot load)"
            )
            # Its copy of the weights goes before PyTorch loads another.
            del onnx
        if config.backend == "onnx":
            raise ValueError(f"backend onnx: {reason}")
        if device.type == "cuda":
            log.warning("serving with PyTorch on %s: %s", device, reason)
        else:
            log.info("serving with PyTorch: %s", reason)
    return TorchBackend(model_dir, device, config.precision, threads)
