"""Typed settings of the model server: one dataclass, one ``--flag`` per field.

Defaults suit one small CPU machine and a GPU node alike; every field is a flag of
``python -m serving.server`` (``--max-batch-size 64``), so the cluster's ServingRuntime args
and the local deploy step set them the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

from bertops.config import add_dataclass_arguments
from bertops.device import PRECISIONS

BACKENDS = ("auto", "onnx", "torch")
DEVICES = ("auto", "cpu", "cuda")
LOG_FORMATS = ("json", "text")
# auto: what the model directory's serving.json says (bertops.evaluation.SERVING_FILE), fp32 without one.
SERVED_VARIANTS = ("auto", "fp32", "int8")


@dataclass(frozen=True)
class ServingConfig:
    """How the server runs the model and which requests it accepts."""

    model_version: str = field(
        default="",
        metadata={
            "help": "the registry version served: /v2/models/NAME/versions/THIS/... answer like the unversioned "
            "routes, any other version 404 ('': unknown, only the unversioned routes answer)"
        },
    )
    backend: str = field(
        default="auto",
        metadata={"help": "auto (ONNX Runtime when model.onnx is present and usable, else PyTorch), onnx or torch"},
    )
    variant: str = field(
        default="auto",
        metadata={
            "help": "auto (what the model's serving.json says, fp32 without one), fp32, or int8 (model.int8.onnx "
            "on ONNX Runtime; a CPU variant: on a GPU the fp32 model is served whatever this says)"
        },
    )
    device: str = field(default="auto", metadata={"help": "auto (cuda when a GPU is visible), cpu or cuda"})
    precision: str = field(
        default="auto",
        metadata={"help": "PyTorch autocast: auto (bf16/fp16 on GPUs, fp32 on CPUs), fp32, bf16, fp16"},
    )
    threads: int = field(
        default=0,
        metadata={
            "help": "CPU threads per forward pass (0: the CPUs this process may use: its affinity, capped by its cgroup CPU limit in a pod)"
        },
    )
    max_batch_size: int = field(default=32, metadata={"help": "most texts gathered into one batch"})
    max_wait_ms: float = field(
        default=5.0, metadata={"help": "longest a text waits for others to fill its batch, in milliseconds"}
    )
    max_batch_tokens: int = field(
        default=8192, metadata={"help": "most padded tokens (rows x longest row) in one forward pass"}
    )
    max_length: int = field(
        default=512, metadata={"help": "tokens kept per text; longer texts are truncated (the head is kept)"}
    )
    max_instances: int = field(default=64, metadata={"help": "most texts in one request (more: 400)"})
    max_text_chars: int = field(
        default=100_000, metadata={"help": "longest text accepted, in characters (longer: 400)"}
    )
    max_body_bytes: int = field(default=4 * 1024 * 1024, metadata={"help": "largest request body (larger: 413)"})
    max_queued_texts: int = field(
        default=256,
        metadata={
            "help": "most texts accepted and not yet answered (waiting or running); a request that would pass "
            "it answers 503 with Retry-After at once"
        },
    )
    max_header_bytes: int = field(
        default=64 * 1024,
        metadata={"help": "largest request line and headers, in bytes (larger: 431, connection closed)"},
    )
    header_timeout_s: float = field(
        default=10.0,
        metadata={
            "help": "seconds a request's line and headers may take to arrive, from its first byte or the "
            "connection's opening (later: 408, connection closed)"
        },
    )
    body_timeout_s: float = field(
        default=60.0,
        metadata={"help": "seconds a request's body may take to arrive after its headers (later: 408, closed)"},
    )
    idle_timeout_s: float = field(
        default=65.0,
        metadata={
            "help": "seconds an idle keep-alive connection stays open (KServe's default; longer than the "
            "60 s idle timeout of common load balancers, so they close first)"
        },
    )
    grace_period_s: int = field(
        default=30,
        metadata={
            "help": "seconds in-flight and queued requests get to finish after SIGTERM (those still running "
            "then answer 503)"
        },
    )
    log_format: str = field(default="json", metadata={"help": "json (one object per line) or text"})
    log_inference_dir: str = field(
        default="",
        metadata={
            "help": "directory of the inference log: one JSON Lines record per text answered, in rotating "
            "files (bertops.inference_log; empty: no log)"
        },
    )
    log_sample_rate: float = field(
        default=1.0, metadata={"help": "share of texts the inference log keeps, 0-1 (each text drawn at random)"}
    )
    log_texts: bool = field(
        default=True,
        metadata={
            "help": "keep each text in the inference log (false: only its SHA-256 and length, for personal data)"
        },
    )
    log_max_file_mb: float = field(default=64.0, metadata={"help": "size at which an inference log file rotates, MiB"})
    log_max_files: int = field(default=10, metadata={"help": "inference log files kept (the oldest go first)"})
    log_queue_size: int = field(
        default=10_000,
        metadata={
            "help": "records waiting for the disk; past it records are dropped and counted "
            "(bertops_inference_log_dropped_total), never a request slowed"
        },
    )
    repository_api: bool = field(
        default=False,
        metadata={
            "help": "serve KServe's model repository API (POST /v2/repository/models/NAME/load|unload): "
            "it has no authentication, so only with --host on loopback"
        },
    )

    def __post_init__(self) -> None:
        for name, allowed in (
            ("backend", BACKENDS),
            ("variant", SERVED_VARIANTS),
            ("device", DEVICES),
            ("precision", PRECISIONS),
            ("log_format", LOG_FORMATS),
        ):
            value = getattr(self, name)
            # A device index (cuda:1) is a cuda device.
            if value not in allowed and not (name == "device" and value.startswith("cuda:")):
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, str | bool):
                continue
            # Zero means something for these (dispatch at once; the CPUs this process may use; log nothing); not for the limits.
            zero_ok = f.name in ("max_wait_ms", "threads", "log_sample_rate")
            if value < 0 or (value == 0 and not zero_ok):
                raise ValueError(f"{f.name} must be {'>= 0' if zero_ok else '> 0'}; got {value!r}")
        if self.log_sample_rate > 1:
            raise ValueError(f"log_sample_rate must be between 0 and 1; got {self.log_sample_rate!r}")
        if self.max_queued_texts < self.max_instances:
            # Else a request of --max-instances texts could never be accepted.
            raise ValueError(
                f"max_queued_texts ({self.max_queued_texts}) must be >= max_instances ({self.max_instances})"
            )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per ``ServingConfig`` field, with its default in the help."""
    add_dataclass_arguments(parser, ServingConfig, title="serving")


def from_namespace(namespace: argparse.Namespace) -> ServingConfig:
    """The ``ServingConfig`` that parsed flags describe; ``ValueError`` for an invalid value."""
    return ServingConfig(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(ServingConfig)})
