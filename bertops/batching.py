"""Dynamic padding and length-grouped batches: pad each batch only to its own longest row."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel


def pad_batch(
    sequences: Sequence[Sequence[int]], pad_id: int, pin_memory: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` padded to the longest sequence of the batch."""
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    if pin_memory:
        ids, mask = ids.pin_memory(), mask.pin_memory()
    return ids, mask


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random, group_factor: int = 50
) -> list[list[int]]:
    """Shuffled batches of indices whose members have similar lengths.

    Indices are shuffled, cut into mega-batches of ``group_factor * batch_size``, sorted by
    length inside each, cut into batches, and the batches shuffled: random enough for SGD,
    with little padding.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    mega = batch_size * group_factor
    batches: list[list[int]] = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start : start + mega], key=lambda i: lengths[i], reverse=True)
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def shard_steps(
    batches: Sequence[list[int]], rank: int, world_size: int, accumulation: int = 1
) -> list[list[list[int]]]:
    """This rank's micro-batches for every optimizer step of one pass over ``batches``.

    Each step takes ``world_size * accumulation`` consecutive batches and gives rank ``r`` every
    ``world_size``-th of them from offset ``r``. Like ``DistributedSampler``, the list wraps round
    to its start so that every rank runs the same number of steps (collectives must match up).
    With one process and no accumulation it is ``[[b] for b in batches]``.
    """
    per_step = world_size * accumulation
    steps = math.ceil(len(batches) / per_step)
    padded = [batches[i % len(batches)] for i in range(steps * per_step)]
    return [padded[s * per_step + rank : (s + 1) * per_step : world_size] for s in range(steps)]


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Batches of indices in length order, for inference (order does not matter there)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def predict_proba(
    model: PreTrainedModel,
    sequences: Sequence[Sequence[int]],
    pad_id: int,
    batch_size: int = 64,
    autocast: torch.dtype | None = None,
) -> torch.Tensor:
    """Class probabilities ``[len(sequences), num_labels]`` (fp32, CPU), in input order."""
    import torch

    device = next(model.parameters()).device
    model.eval()
    num_labels = model.config.num_labels
    assert num_labels, "a sequence-classification model has num_labels"
    out = torch.empty((len(sequences), num_labels), dtype=torch.float32)
    with torch.inference_mode():
        for batch in sorted_batches([len(s) for s in sequences], batch_size):
            ids, mask = pad_batch([sequences[i] for i in batch], pad_id, pin_memory=device.type == "cuda")
            with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
                logits = model(
                    input_ids=ids.to(device, non_blocking=True), attention_mask=mask.to(device, non_blocking=True)
                ).logits
            out[batch] = torch.softmax(logits.float(), dim=-1).cpu()
    return out
