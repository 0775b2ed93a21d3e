"""Data-parallel training across processes (``torchrun --nproc_per_node=N -m symlora train``).

Each rank draws its own batches; ``DistributedDataParallel`` averages the gradients of
the trainable parameters, so every rank ends with the same adapter.  gloo on CPU, NCCL
on GPU.  Only rank 0 should print or write files.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` when not running distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(device: str = "auto") -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return rank_and_world()
    use_nccl = device != "cpu" and torch.cuda.is_available()
    if use_nccl:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if use_nccl else "gloo")
    return rank_and_world()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The model wrapped for gradient averaging across ranks."""
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
