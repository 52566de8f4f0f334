"""The settings of the fine-tuning loop: the pipeline's fine-tuning parameters plus the loop's own.

``bertops.config.FinetuneConfig`` holds the settings that are pipeline parameters too (defined
once, with their defaults); ``LoopConfig`` adds the ones only the loop's own command
(``python -m components.finetune``) and callers of ``train`` set, which the pipeline leaves at
their defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bertops.config import FinetuneConfig
from bertops.device import PRECISIONS
from bertops.errors import BertopsError

CHECKPOINT_SUFFIX = ".checkpoints"


@dataclass
class LoopConfig(FinetuneConfig):
    """Every setting of one fine-tuning run, with defaults that work on one CPU or one GPU."""

    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm (0: no clipping)"})
    device: str = field(default="auto", metadata={"help": "'auto', 'cpu', 'cuda'"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model (slow first steps)"})
    num_workers: int = field(
        default=-1, metadata={"help": "DataLoader workers (-1: 2 on CUDA, 0 on CPU, where they steal compute)"}
    )
    threads: int = field(
        default=0,
        metadata={
            "help": "CPU threads when training on the CPU (0: OMP_NUM_THREADS if set, else the CPUs this process "
            "may use, affinity and cgroup limit, divided by cpu_sharing)"
        },
    )
    cpu_sharing: int = field(
        default=1, metadata={"help": "processes training at once on this machine's CPUs, each taking its share"}
    )
    keep_checkpoints: int = field(default=1, metadata={"help": "newest checkpoints kept"})
    min_delta: float = field(default=0.0, metadata={"help": "smallest accuracy gain that counts as better"})


def checkpoint_location(out_dir: Path, config: FinetuneConfig) -> Path:
    """Where this run's checkpoints live: ``config.checkpoint_dir``, else ``<out_dir>.checkpoints``.

    Not inside ``out_dir``: that directory is the model that is registered and served, and
    optimizer state would triple its size.
    """
    return Path(config.checkpoint_dir) if config.checkpoint_dir else out_dir.with_name(out_dir.name + CHECKPOINT_SUFFIX)


def check_config(config: LoopConfig) -> None:
    """Raise ``BertopsError`` naming the settings that cannot work."""
    problems = [
        f"{name}={getattr(config, name)!r}"
        for name, ok in (
            ("batch_size", config.batch_size >= 1),
            ("grad_accumulation", config.grad_accumulation >= 1),
            ("epochs", config.epochs >= 1),
            ("max_steps", config.max_steps >= 0),
            ("learning_rate", config.learning_rate > 0),
            ("warmup_ratio", 0 <= config.warmup_ratio < 1),
            ("weight_decay", config.weight_decay >= 0),
            ("max_grad_norm", config.max_grad_norm >= 0),
            ("checkpoint_every", config.checkpoint_every >= 0),
            ("keep_checkpoints", config.keep_checkpoints >= 1),
            ("threads", config.threads >= 0),
            ("cpu_sharing", config.cpu_sharing >= 1),
            ("eval_every", config.eval_every >= 0),
            ("patience", config.patience >= 0),
            ("precision", config.precision in PRECISIONS),
        )
        if not ok
    ]
    if problems:
        raise BertopsError(f"invalid training settings: {', '.join(problems)}")
