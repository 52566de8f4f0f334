"""A lean, resumable fine-tuning loop for any BERT-style encoder with ``AutoModelForSequenceClassification``.

- Dynamic padding with length-grouped batches keeps the compute on real tokens.
- AdamW (fused) with linear warm-up and decay, gradient accumulation, gradient clipping, autocast
  where the hardware has a fast low-precision path (bf16, or fp16 with a grad scaler on older
  GPUs), optional ``torch.compile``, DataLoader workers with pinned memory on CUDA.
- Checkpoints every N steps and at the end, written atomically; a run started again with the
  same output location resumes from the newest one and ends where an uninterrupted run would.
- Runs unchanged under ``torchrun``: DistributedDataParallel (NCCL on GPUs, gloo on CPUs), each
  rank taking its share of the same length-grouped batches; rank 0 alone logs and writes.
- Evaluates on the validation split every K steps (or per epoch), stops early after
  ``patience`` evaluations without improvement, and saves the history and ``curves.png``.
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertops.artifacts import CURVES_FILE, load_tokenized, tokenized_max_length, write_training_record
from bertops.batching import length_grouped_batches, pad_batch, predict_proba, shard_steps
from bertops.cpu import available_cpus, thread_share
from bertops.device import DeviceClock, autocast_dtype, compile_toolchain_problem, precision_name
from bertops.errors import BertopsError
from bertops.model_source import load_tokenizer, resolve_model_source
from components.finetune import checkpoint, progress
from components.finetune.config import LoopConfig, check_config, checkpoint_location
from components.finetune.curves import plot_curves
from components.finetune.distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    init_distributed,
    shutdown,
)

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What one fine-tuning run did, saved beside the model as ``training.json``."""

    steps: int
    train_samples: int
    final_train_loss: float
    validation_accuracy: float
    # Throughput over all ranks and time in training steps; evaluation and checkpoints excluded.
    samples_per_second: float
    train_seconds: float
    device: str
    precision: str
    tokens_per_second: float = 0.0
    world_size: int = 1
    effective_batch_size: int = 0
    resumed_from_step: int = 0
    stopped_early: bool = False
    best_step: int = 0
    # Largest difference of model.onnx's class probabilities from PyTorch's; None without model.onnx.
    onnx_max_abs_diff: float | None = None
    # One entry per evaluation: step, epoch, train_loss (mean since the previous one), val_loss,
    # val_accuracy, learning_rate.
    history: list[dict[str, float]] = field(default_factory=list)


# Called with each evaluation's history entry, on rank 0, while the run trains (e.g. to log it to MLflow).
EvaluationHook = Callable[[dict[str, float]], None]


def train(
    tokenized_dir: Path, out_dir: Path, config: LoopConfig, on_evaluation: EvaluationHook | None = None
) -> TrainResult:
    """Fine-tune ``config.base_model`` on ``tokenized_dir``'s train split and save it to ``out_dir``.

    ``out_dir`` receives a ``save_pretrained`` model with its tokenizer and ``id2label``, plus
    ``training.json`` (this result, with the evaluation history) and ``curves.png``. If the
    checkpoint location holds a checkpoint of the same settings, training resumes from it.
    Under ``torchrun`` every rank calls this; all of them return the same result.
    """
    check_config(config)
    ctx, device = init_distributed(config.device)
    if device.type == "cpu":
        import torch

        threads = training_threads(config)
        torch.set_num_threads(threads)
        # Candidates training side by side must not each take every core: say what this one took.
        if ctx.is_main:
            log.info(
                "training on the CPU with %d thread(s): %d CPU(s) available, %d candidate(s) training side by side",
                threads, available_cpus(), config.cpu_sharing,
            )  # fmt: skip
    try:
        run = TrainingRun(tokenized_dir, out_dir, config, ctx, device, on_evaluation)
        for _ in run.steps():
            pass
        return run.finish()
    finally:
        shutdown(ctx)


def training_threads(config: LoopConfig) -> int:
    """CPU threads for this training process: ``config.threads``, else ``OMP_NUM_THREADS`` (torchrun sets it
    for several ranks on a node), else this process's share of the CPUs it may use.

    torch's default is every core of the machine; candidates trained side by side would each take
    all of them and slow each other down, and in a pod the node's cores are not the pod's CPU limit.
    """
    if config.threads:
        return config.threads
    from_env = os.environ.get("OMP_NUM_THREADS", "")
    if from_env.isdigit() and int(from_env) > 0:
        return int(from_env)
    return thread_share(config.cpu_sharing)


def _collate(
    sequences: list[list[int]], labels: torch.Tensor, pad_id: int, micro_batches: list[list[int]]
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]]:
    """One optimizer step's micro-batches as ``(input_ids, attention_mask, labels, real tokens)``."""
    out = []
    for batch in micro_batches:
        ids, mask = pad_batch([sequences[i] for i in batch], pad_id)
        out.append((ids, mask, labels[batch], int(mask.sum())))
    return out


class TrainingRun:
    """One rank's training run: ``steps()`` trains from the start (or the newest checkpoint), ``finish()`` exports.

    ``train()`` is the way to run it; the class is public for callers that interleave other work
    between steps (the benchmark runs the Trainer in lockstep with it).
    """

    def __init__(
        self,
        tokenized_dir: Path,
        out_dir: Path,
        config: LoopConfig,
        ctx: DistContext,
        device: torch.device,
        on_evaluation: EvaluationHook | None = None,
    ) -> None:
        import torch
        from transformers import set_seed as hf_set_seed

        if config.compile:
            # Refused here, before minutes of loading, not at the first step's kernel build.
            problem = compile_toolchain_problem(device)
            if problem:
                raise BertopsError(problem)
        self.config, self.ctx, self.device, self.out_dir = config, ctx, device, out_dir
        self.tokenized_dir, self.on_evaluation = tokenized_dir, on_evaluation
        self.checkpoint_dir = checkpoint_location(out_dir, config)
        # The same seed on every rank: identical head init, batch order and (per rank) dropout stream.
        hf_set_seed(config.seed)
        names = self._load_data()
        self._load_model(names)
        self.steps_per_epoch = len(self._epoch_plan(0))
        self.total_steps = config.max_steps or config.epochs * self.steps_per_epoch
        self._build_optimizer()

        # Progress, restored from a checkpoint when there is one.
        self.step = self.epoch = self.epoch_step = self.samples_seen = 0
        self.history: list[dict[str, float]] = []
        self.best_accuracy, self.best_step, self.bad_evals, self.stopped = -1.0, 0, 0, False
        # This rank's training loss since the last evaluation, summed on the device: reading it
        # back forces a GPU sync, so that happens only when a number is needed.
        self.loss_sum, self.loss_count = torch.zeros((), dtype=torch.float64, device=device), 0
        self.resumed_from = checkpoint.resume_run(self)
        # This process's throughput counters (not restored: they describe this invocation).
        self.samples_done = self.tokens_done = 0
        self.clock = DeviceClock(device)
        self.runner = self._runner()

    def _load_data(self) -> list[str]:
        """Read the train and validation splits; returns the label names."""
        import torch

        self.train_ids, train_labels, names = load_tokenized(self.tokenized_dir, "train")
        self.val_ids, self.val_labels, _ = load_tokenized(self.tokenized_dir, "validation")
        if not self.train_ids:
            raise BertopsError(f"{self.tokenized_dir}: the train split is empty")
        self.train_labels = torch.tensor(train_labels)
        self.lengths = [len(s) for s in self.train_ids]
        return list(names)

    def _load_model(self, names: list[str]) -> None:
        """The tokenizer, the model with a fresh head for ``names``, and the autocast set-up."""
        import torch
        from transformers import AutoModelForSequenceClassification

        self.tokenizer = load_tokenizer(self.config.base_model)
        self.pad_id = self.tokenizer.pad_token_id or 0
        self.model = AutoModelForSequenceClassification.from_pretrained(
            resolve_model_source(self.config.base_model),
            num_labels=len(names),
            id2label=dict(enumerate(names)),
            label2id={name: i for i, name in enumerate(names)},
            # transformers 5 loads in the checkpoint's saved dtype by default (dtype="auto"): an fp16
            # checkpoint would train fp16 weights. The master weights are fp32; autocast does the rest.
            dtype=torch.float32,
        ).to(self.device)
        # from_pretrained returns the model in eval mode: training needs dropout on.
        self.model.train()
        self.amp = autocast_dtype(self.device, self.config.precision)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)

    def _build_optimizer(self) -> None:
        """Fused AdamW (no decay on biases and LayerNorm) with linear warm-up and decay over ``total_steps``."""
        import torch
        from transformers import get_linear_schedule_with_warmup

        no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
        params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        groups = [
            {"params": [p for n, p in params if not n.endswith(no_decay)], "weight_decay": self.config.weight_decay},
            {"params": [p for n, p in params if n.endswith(no_decay)], "weight_decay": 0.0},
        ]
        self.params = [p for _, p in params]
        # Fused AdamW: one kernel over all parameters, on CPU and CUDA alike (the Trainer's default too).
        self.optimizer = torch.optim.AdamW(groups, lr=self.config.learning_rate, fused=True)
        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer, int(self.config.warmup_ratio * self.total_steps), self.total_steps
        )

    def _runner(self) -> Any:
        """What the forward pass runs: the model, wrapped in DDP across ranks and compiled when asked."""
        import torch

        runner: Any = self.model
        if self.ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            runner = DistributedDataParallel(self.model, device_ids=device_ids)
        if self.config.compile:
            runner = torch.compile(runner, dynamic=True)
        return runner

    # --- data ---------------------------------------------------------------------------------

    def _epoch_plan(self, epoch: int) -> list[list[list[int]]]:
        """This rank's micro-batches per step in ``epoch``: the same order on every rank and on resume."""
        rng = random.Random(self.config.seed * 1_000_003 + epoch)
        batches = length_grouped_batches(self.lengths, self.config.batch_size, rng)
        return shard_steps(batches, self.ctx.rank, self.ctx.world_size, self.config.grad_accumulation)

    def _loader(self, plan: list[list[list[int]]]) -> Any:
        import torch
        from torch.utils.data import DataLoader

        cuda = self.device.type == "cuda"
        workers = self.config.num_workers if self.config.num_workers >= 0 else (2 if cuda else 0)
        return DataLoader(
            plan,  # type: ignore[arg-type]  # a list is a map-style dataset
            batch_size=None,
            collate_fn=partial(_collate, self.train_ids, self.train_labels, self.pad_id),
            num_workers=workers,
            pin_memory=cuda,
            # Its own generator: the loader draws a seed per iterator, which must not move the
            # global RNG (dropout) or a resumed run would diverge from an uninterrupted one.
            generator=torch.Generator(),
        )

    # --- evaluation ---------------------------------------------------------------------------

    def _evaluate(self) -> None:
        """Validation loss and accuracy (each rank predicts a shard), history entry, early stopping."""
        import torch

        shard = range(self.ctx.rank, len(self.val_ids), self.ctx.world_size)
        correct = nll = 0.0
        if len(shard):
            probs = predict_proba(self.model, [self.val_ids[i] for i in shard], self.pad_id, autocast=self.amp)
            labels = torch.tensor([self.val_labels[i] for i in shard])
            picked = probs[torch.arange(len(labels)), labels]
            correct = float((probs.argmax(dim=-1) == labels).sum())
            nll = float(-picked.clamp_min(1e-12).log().sum())
        self.model.train()
        correct, nll, count, loss_sum, loss_count = all_reduce_sum(
            [correct, nll, float(len(shard)), float(self.loss_sum), float(self.loss_count)], self.ctx, self.device
        )
        accuracy = correct / count if count else 0.0
        entry = {
            "step": self.step,
            "epoch": round(self.step / self.steps_per_epoch, 3),
            "train_loss": loss_sum / loss_count if loss_count else float("nan"),
            "val_loss": nll / count if count else float("nan"),
            "val_accuracy": accuracy,
            "learning_rate": self.scheduler.get_last_lr()[0],
        }
        self.history.append(entry)
        if self.on_evaluation is not None and self.ctx.is_main:
            self.on_evaluation(entry)
        self.loss_sum.zero_()
        self.loss_count = 0
        if accuracy > self.best_accuracy + self.config.min_delta:
            self.best_accuracy, self.best_step, self.bad_evals = accuracy, self.step, 0
            if self.config.patience and self.ctx.is_main:
                checkpoint.save_best(self.checkpoint_dir, self.model.state_dict())
        else:
            self.bad_evals += 1
            self.stopped = bool(self.config.patience) and self.bad_evals >= self.config.patience
        progress.log_evaluation(self, entry)

    # --- training -----------------------------------------------------------------------------

    def _train_step(self, micro_batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]]) -> int:
        """Forward and backward over the micro-batches, then one optimizer step; returns real tokens."""
        import torch

        tokens = 0
        for index, (ids, mask, labels, real) in enumerate(micro_batches):
            last = index == len(micro_batches) - 1
            # Gradients are all-reduced once per optimizer step, on its last micro-batch.
            sync = nullcontext() if last or not self.ctx.distributed else self.runner.no_sync()
            with sync:
                with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
                    out = self.runner(
                        input_ids=ids.to(self.device, non_blocking=True),
                        attention_mask=mask.to(self.device, non_blocking=True),
                        labels=labels.to(self.device, non_blocking=True),
                    )
                loss = out.loss / len(micro_batches)
                self.scaler.scale(loss).backward()
            self.loss_sum += loss.detach()
            tokens += real
        self.loss_count += 1
        if self.config.max_grad_norm:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return tokens

    def steps(self) -> Iterator[int]:
        """Train to the end (or an early stop), yielding the step number after every optimizer step.

        Evaluations and checkpoints happen inside, on their schedule. Training time is counted
        with batch loading included and evaluation, checkpoints and the caller's time between
        steps left out, so a caller may interleave other work (the benchmark does). On a GPU the
        clock waits for the device only around evaluations, checkpoints and progress reports,
        never at every step.
        """
        with progress.Progress(self) as report:
            while self.step < self.total_steps and not self.stopped:
                plan = self._epoch_plan(self.epoch)
                batches = iter(self._loader(plan[self.epoch_step :]))
                while True:
                    self.clock.start()
                    micro_batches = next(batches, None)
                    if micro_batches is None:
                        break
                    last = self._step(micro_batches, len(plan))
                    report.step_done(last)
                    with self.clock.away():
                        yield self.step
                    if last or self.stopped:
                        return

    def _step(
        self, micro_batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]], epoch_steps: int
    ) -> bool:
        """One optimizer step with the evaluation and checkpoint due after it; True when it was the last."""
        c = self.config
        self.tokens_done += self._train_step(micro_batches)
        self.samples_done += sum(len(labels) for _, _, labels, _ in micro_batches)
        self.step += 1
        self.epoch_step += 1
        self.samples_seen += c.batch_size * c.grad_accumulation * self.ctx.world_size
        end_of_epoch = self.epoch_step == epoch_steps
        if end_of_epoch:
            self.epoch, self.epoch_step = self.epoch + 1, 0
        last = self.step >= self.total_steps
        if (c.eval_every and self.step % c.eval_every == 0) or (not c.eval_every and end_of_epoch) or last:
            self.clock.stop()
            self._evaluate()
        if last or self.stopped or (c.checkpoint_every and self.step % c.checkpoint_every == 0):
            self.clock.stop()
            checkpoint.save_run(self)
        return last

    def mean_loss(self) -> float:
        """The training loss since the last evaluation, over all ranks; ``BertopsError`` once it is not finite.

        Every rank must agree: one raising alone would leave the others waiting in their next
        collective (with NCCL, until its timeout). The sum over ranks is non-finite on all of
        them as soon as it is on one.
        """
        if not self.loss_count:
            # Just evaluated: the history holds the mean over all ranks already.
            loss = float(self.history[-1]["train_loss"])
        else:
            total, count = all_reduce_sum([float(self.loss_sum), float(self.loss_count)], self.ctx, self.device)
            loss = total / count
        if not math.isfinite(loss):
            raise BertopsError(f"training diverged at step {self.step} (loss {loss}); lower the learning rate")
        return loss

    def finish(self) -> TrainResult:
        """After ``steps()``: export from rank 0 and return the run's record (the same on every rank)."""
        self.clock.stop()
        samples, tokens = all_reduce_sum([float(self.samples_done), float(self.tokens_done)], self.ctx, self.device)
        return self._finish(samples, tokens, self.clock.seconds)

    def _finish(self, samples: float, tokens: float, seconds: float) -> TrainResult:
        """Export the model (the best one when early stopping is on) and the run's record from rank 0."""
        best = self.config.patience > 0 and self.best_step != self.step
        if best:
            state = checkpoint.load_best(self.checkpoint_dir) if self.ctx.is_main else None
            if state is not None:
                self.model.load_state_dict(state)
        exported = next((h for h in self.history if h["step"] == self.best_step), None) if best else None
        final = exported or (self.history[-1] if self.history else {})
        result = TrainResult(
            steps=self.step,
            train_samples=self.samples_seen,
            final_train_loss=float(self.history[-1]["train_loss"]) if self.history else float("nan"),
            validation_accuracy=float(final.get("val_accuracy", 0.0)),
            samples_per_second=samples / seconds if seconds and samples else 0.0,
            train_seconds=seconds,
            device=str(self.device),
            precision=precision_name(self.amp),
            tokens_per_second=tokens / seconds if seconds and tokens else 0.0,
            world_size=self.ctx.world_size,
            effective_batch_size=self.config.batch_size * self.config.grad_accumulation * self.ctx.world_size,
            resumed_from_step=self.resumed_from,
            stopped_early=self.stopped,
            best_step=self.best_step,
            history=self.history,
        )
        if self.ctx.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.model.save_pretrained(self.out_dir)
            # The length the model was trained on: the server, evaluate and the gate all truncate there.
            max_length = tokenized_max_length(self.tokenized_dir)
            if max_length is not None:
                self.tokenizer.model_max_length = max_length
            self.tokenizer.save_pretrained(self.out_dir)
            if self.history:
                plot_curves(self.history, self.out_dir / CURVES_FILE)
            # Written last: its presence says the directory holds a complete model.
            write_training_record(self.out_dir, asdict(result))
            progress.log_finished(self, result, exported is not None)
        barrier(self.ctx)
        return result
