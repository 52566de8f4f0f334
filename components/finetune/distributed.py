"""One process or many: the torch.distributed set-up the training loop needs, and nothing more.

Under ``torchrun`` (or the Kubeflow Trainer, which runs torchrun in every node's pod) the
environment carries ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; the loop then joins a process
group (NCCL on GPUs, gloo on CPUs). Without them it is a plain single process and every helper
here is a no-op, so the same loop serves both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bertops.device import pick_device

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job: rank 0 of 1 when not distributed."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    # True when this process created the process group (and so must destroy it).
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, checkpoints and saves."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(requested_device: str = "auto") -> tuple[DistContext, torch.device]:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Returns this process's place in the job and its device: ``cuda:LOCAL_RANK`` on GPUs (one
    process per GPU), else the requested device.
    """
    import torch
    import torch.distributed as dist

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(requested_device)
    if world_size <= 1:
        return DistContext(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank, world_size, local_rank, owns_group), device


def shutdown(ctx: DistContext) -> None:
    """Leave the process group this module created (a caller's own group is left alone)."""
    import torch.distributed as dist

    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], ctx: DistContext, device: torch.device) -> list[float]:
    """Element-wise sums of ``values`` over all ranks (the values themselves when not distributed)."""
    import torch
    import torch.distributed as dist

    if not ctx.distributed:
        return values
    # NCCL reduces only CUDA tensors; gloo only CPU ones: the tensor lives on this rank's device.
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return [float(v) for v in tensor.tolist()]


def all_gather(obj: Any, ctx: DistContext) -> list[Any]:
    """``obj`` from every rank, in rank order (``[obj]`` when not distributed)."""
    import torch.distributed as dist

    if not ctx.distributed:
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (nothing to wait for in a single process)."""
    import torch.distributed as dist

    if ctx.distributed:
        dist.barrier()
