"""Export a fine-tuned classifier to ONNX next to its weights, checked against PyTorch.

Called once at registration time, so the registered files carry ``model.onnx`` and every
server that loads them (CPU or CUDA execution provider) can use ONNX Runtime. The graph is
fp32 with dynamic batch and sequence axes: inputs ``input_ids`` and ``attention_mask``
(int64, ``[batch, sequence]``), output ``logits`` (fp32, ``[batch, num_labels]``).

``export_int8`` adds ``model.int8.onnx``, the same graph quantized dynamically to int8 by ONNX
Runtime; it changes outputs by more than the fp32 parity check allows, so the evaluate step
decides on the test split whether it is served.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from serving.backends import INPUT_NAMES, INT8_FILE, ONNX_FILE, OUTPUT_NAME, OnnxBackend
from serving.predictor import pad, softmax

log = logging.getLogger(__name__)

# Largest difference allowed between the class probabilities of ONNX Runtime and PyTorch
# (both fp32 on CPU). Measured on MiniLM and on the tiny test model: below 1e-6.
DEFAULT_TOLERANCE = 1e-4
# Texts of very different lengths, one past any model's 512 tokens, so the check covers
# padding, masking and truncation.
PARITY_TEXTS = (
    "Shares rose.",
    "The central bank raised interest rates again as inflation stayed well above its target.",
    "The striker scored twice in the second half and the home side won the cup final on penalties. " * 3,
    "Parliament debated the budget late into the night before the vote. " * 120,
)
# Protobuf cannot hold a model over 2 GB in one file; larger ones keep weights in model.onnx.data.
SINGLE_FILE_LIMIT_BYTES = 1_800_000_000
# The int8 model: int8 weights, activations quantized per batch at run time (ONNX Runtime's
# dynamic quantization). Only MatMul: the encoder's linear layers, where the time goes; Gather
# (the embeddings, in ONNX Runtime's default op types) saves memory, not time. 7-bit weights
# (reduce_range): on CPUs without VNNI (AVX2 only) the u8 x s8 kernels can saturate 16-bit sums
# with full-range weights; on the tiny test model they cut the largest probability difference
# from fp32 from 0.055 to 0.013, per-channel scales to 0.005, at the same test accuracy. On
# MiniLM (batch 32 of 8 and 92 tokens, a busy 2-core AVX2 machine) these settings measured
# 2.0x and 1.5x fp32, as fast as or faster than per-tensor ones, and the closest to fp32.
INT8_OP_TYPES = ("MatMul",)
INT8_PER_CHANNEL = True
INT8_REDUCE_RANGE = True


class OnnxParityError(RuntimeError):
    """The export cannot be shown to match PyTorch: ONNX Runtime's outputs differ by more than
    the tolerance, or no ONNX Runtime is installed to check them (the project without its
    ``cpu`` or ``cuda`` extra)."""


@dataclass(frozen=True)
class OnnxExport:
    """What ``export_onnx`` wrote and how close it is to PyTorch."""

    path: Path
    max_abs_diff: float
    tolerance: float


@dataclass(frozen=True)
class Int8Export:
    """What ``export_int8`` wrote and its largest class-probability difference from ``model.onnx``."""

    path: Path
    max_abs_diff: float


def parity_batch(model_dir: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """``PARITY_TEXTS`` as one padded batch (``input_ids``, ``attention_mask``) and the model's longest input."""
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    positions = AutoConfig.from_pretrained(str(model_dir)).max_position_embeddings
    max_length = min(tokenizer.model_max_length, positions)
    encoded = tokenizer(list(PARITY_TEXTS), truncation=True, max_length=max_length)["input_ids"]
    ids, mask = pad(encoded, int(tokenizer.pad_token_id or 0))
    return ids, mask, max_length


def export_onnx(model_dir: str | Path, tolerance: float = DEFAULT_TOLERANCE) -> OnnxExport:
    """Write ``model.onnx`` into ``model_dir`` and check it against the PyTorch model.

    The check runs ``PARITY_TEXTS`` as one padded batch through both and compares the class
    probabilities. Above ``tolerance`` the file is removed and ``OnnxParityError`` raised, so
    a server never picks up a graph that disagrees with the weights.
    """
    from transformers import AutoModelForSequenceClassification

    model_dir = Path(model_dir)
    path = model_dir / ONNX_FILE
    try:
        import onnxruntime  # noqa: F401 - only whether it can be imported
    except ImportError as exc:
        raise OnnxParityError(
            f"{path}: not exported, onnxruntime is not installed to check it (install bertops[cpu])"
        ) from exc
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    ids, mask, max_length = parity_batch(model_dir)

    sample = (torch.from_numpy(ids[:2, :16]), torch.from_numpy(mask[:2, :16]))
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence", max=max_length)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    with _quiet_exporter():
        torch.onnx.export(
            _LogitsOnly(model).eval(),
            sample,
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_shapes={name: {0: batch, 1: sequence} for name in INPUT_NAMES},
            external_data=weight_bytes > SINGLE_FILE_LIMIT_BYTES,
            dynamo=True,
            verbose=False,
        )
    with torch.inference_mode():
        expected = torch.softmax(
            model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits, -1
        )
    got = softmax(OnnxBackend(path, torch.device("cpu")).logits(ids, mask))
    diff = float(np.abs(got - expected.numpy()).max())
    if not diff <= tolerance:
        path.unlink()
        raise OnnxParityError(f"{path}: ONNX Runtime differs from PyTorch by {diff:.2e} (tolerance {tolerance:.0e})")
    log.info("exported %s (max abs probability difference vs PyTorch: %.2e)", path, diff)
    return OnnxExport(path, diff, tolerance)


def export_int8(model_dir: str | Path) -> Int8Export:
    """Write ``model.int8.onnx`` beside ``model_dir``'s ``model.onnx``: its dynamic int8 quantization.

    The new model is loaded and run on ``PARITY_TEXTS`` before this returns; on any failure the
    file is removed and the error raised. No tolerance applies here: the evaluate step compares
    its accuracy and macro F1 with fp32's on the test split.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model_dir = Path(model_dir)
    source, path = model_dir / ONNX_FILE, model_dir / INT8_FILE
    cpu = torch.device("cpu")
    try:
        with _quiet_quantizer():
            quantize_dynamic(
                source,
                path,
                op_types_to_quantize=list(INT8_OP_TYPES),
                per_channel=INT8_PER_CHANNEL,
                reduce_range=INT8_REDUCE_RANGE,
                weight_type=QuantType.QInt8,
            )
        ids, mask, _ = parity_batch(model_dir)
        expected = softmax(OnnxBackend(source, cpu).logits(ids, mask))
        got = softmax(OnnxBackend(path, cpu, variant="int8").logits(ids, mask))
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    diff = float(np.abs(got - expected).max())
    log.info("exported %s (max abs probability difference vs fp32 ONNX: %.2e)", path, diff)
    return Int8Export(path, diff)


def _not_the_quantizers_info(record: logging.LogRecord) -> bool:
    return record.levelno > logging.INFO or "quantization" not in Path(record.pathname).parts


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Keep ONNX Runtime's quantizer's per-tensor INFO lines (it logs through the root logger) out of the step's log."""
    root = logging.getLogger()
    root.addFilter(_not_the_quantizers_info)
    try:
        yield
    finally:
        root.removeFilter(_not_the_quantizers_info)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Keep the exporter's per-pass INFO lines and its irrelevant warnings out of the step's log."""
    loggers = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            # input_ids and attention_mask share both axes, which is what we mean.
            warnings.filterwarnings("ignore", message=".*will not be used, since it shares the same shape constraints")
            # Raised inside torch.export itself (torch 2.13); nothing to act on here.
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


class _LogitsOnly(torch.nn.Module):
    """The model as ``(input_ids, attention_mask) -> logits``: the graph's exact interface."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits
