"""A lean fine-tuning loop for any BERT-style encoder with ``AutoModelForSequenceClassification``.

Dynamic padding with length-grouped batches keeps the compute on real tokens; AdamW with
linear warm-up and decay, gradient clipping, and autocast where the hardware has a fast
low-precision path. The same code runs on CPU (tests) and CUDA.
"""

from __future__ import annotations

import json
import logging
import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bertops.batching import length_grouped_batches, pad_batch, predict_proba
from bertops.device import autocast_dtype, pick_device
from bertops.errors import BertopsError
from bertops.model_source import load_tokenizer, resolve_model_source
from components.tokenize.tokenization import load_tokenized

log = logging.getLogger(__name__)

TRAINING_FILE = "training.json"


@dataclass
class TrainResult:
    """What one fine-tuning run did, saved beside the model as ``training.json``."""

    steps: int
    train_samples: int
    final_train_loss: float
    validation_accuracy: float
    samples_per_second: float
    train_seconds: float
    device: str
    precision: str


def finetune(
    tokenized_dir: Path,
    out_dir: Path,
    base_model: str,
    batch_size: int = 16,
    epochs: int = 1,
    max_steps: int = 0,
    learning_rate: float = 1e-4,
    warmup_ratio: float = 0.1,
    weight_decay: float = 0.01,
    seed: int = 42,
    device: str = "auto",
    precision: str = "auto",
) -> TrainResult:
    """Fine-tune ``base_model`` on ``tokenized_dir``'s train split and save it to ``out_dir``.

    ``out_dir`` receives a ``save_pretrained`` model with its tokenizer and ``id2label``, plus
    ``training.json``. ``max_steps`` (when > 0) overrides ``epochs``.
    """
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForSequenceClassification, get_linear_schedule_with_warmup
    from transformers import set_seed as hf_set_seed

    if batch_size < 1 or learning_rate <= 0 or epochs < 1 or max_steps < 0:
        raise BertopsError(
            f"invalid training settings: batch_size={batch_size}, learning_rate={learning_rate}, "
            f"epochs={epochs}, max_steps={max_steps}"
        )
    hf_set_seed(seed)
    source = resolve_model_source(base_model)
    train_ids, train_labels, names = load_tokenized(tokenized_dir, "train")
    val_ids, val_labels, _ = load_tokenized(tokenized_dir, "validation")
    tokenizer = load_tokenizer(base_model)
    model = AutoModelForSequenceClassification.from_pretrained(
        source,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
    )
    target = pick_device(device)
    model.to(target)
    amp_dtype = autocast_dtype(target, precision)
    scaler = torch.amp.GradScaler(target.type, enabled=amp_dtype == torch.float16)

    steps_per_epoch = math.ceil(len(train_ids) / batch_size)
    total_steps = max_steps or epochs * steps_per_epoch
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)], "weight_decay": weight_decay},
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=learning_rate, fused=target.type == "cuda")
    scheduler = get_linear_schedule_with_warmup(optimizer, int(warmup_ratio * total_steps), total_steps)
    rng = random.Random(seed)
    lengths = [len(s) for s in train_ids]
    labels_tensor = torch.tensor(train_labels)
    pad_id = tokenizer.pad_token_id or 0

    model.train()
    step, samples, loss_value = 0, 0, float("nan")
    started = time.perf_counter()
    # A bar on a terminal; in a pipeline task (no TTY) a log line every tenth of the run instead.
    interactive = sys.stderr.isatty()
    log_every = max(1, total_steps // 10)
    with tqdm(total=total_steps, desc="finetune", unit="step", mininterval=2.0, disable=not interactive) as bar:
        while step < total_steps:
            for batch in length_grouped_batches(lengths, batch_size, rng):
                if step >= total_steps:
                    break
                ids, mask = pad_batch([train_ids[i] for i in batch], pad_id, pin_memory=target.type == "cuda")
                with torch.autocast(target.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    out = model(
                        input_ids=ids.to(target, non_blocking=True),
                        attention_mask=mask.to(target, non_blocking=True),
                        labels=labels_tensor[batch].to(target, non_blocking=True),
                    )
                scaler.scale(out.loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                samples += len(batch)
                loss_value = float(out.loss.detach())
                if not math.isfinite(loss_value):
                    raise BertopsError(f"training diverged at step {step} (loss {loss_value}); lower the learning rate")
                elapsed = time.perf_counter() - started
                bar.set_postfix(loss=f"{loss_value:.3f}", samples_per_s=f"{samples / elapsed:.1f}")
                bar.update()
                if not interactive and (step % log_every == 0 or step == total_steps):
                    log.info("step %d/%d  loss %.4f  %.1f samples/s", step, total_steps, loss_value, samples / elapsed)
    seconds = time.perf_counter() - started

    probs = predict_proba(model, val_ids, pad_id, autocast=amp_dtype)
    val_accuracy = float((probs.argmax(dim=-1) == torch.tensor(val_labels)).float().mean()) if val_ids else 0.0
    result = TrainResult(
        steps=step,
        train_samples=samples,
        final_train_loss=loss_value,
        validation_accuracy=val_accuracy,
        samples_per_second=samples / seconds if seconds else 0.0,
        train_seconds=seconds,
        device=str(target),
        precision=str(amp_dtype).removeprefix("torch.") if amp_dtype else "fp32",
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / TRAINING_FILE).write_text(json.dumps(asdict(result), indent=2), encoding="utf-8")
    log.info(
        "trained %d steps (%d samples) in %.0fs on %s: %.1f samples/s, final loss %.3f, validation accuracy %.3f",
        step,
        samples,
        seconds,
        target,
        result.samples_per_second,
        loss_value,
        val_accuracy,
    )
    return result
