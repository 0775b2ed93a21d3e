"""Where a training step's memory goes: weights, gradients, optimizer state, activations.

LoRA users keep asking why an adapter "didn't save memory": the answer is usually that
activations dominate.  This module measures each part from the tensors themselves so the
app can show the split honestly.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch import nn

from .events import MemoryBreakdown


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def parameter_bytes(model: nn.Module) -> tuple[int, int]:
    """``(frozen, trainable)`` parameter bytes."""
    frozen = trainable = 0
    for p in model.parameters():
        if p.requires_grad:
            trainable += _nbytes(p)
        else:
            frozen += _nbytes(p)
    return frozen, trainable


def grad_bytes(model: nn.Module) -> int:
    return sum(_nbytes(p.grad) for p in model.parameters() if p.grad is not None)


def optimizer_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(_nbytes(v) for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v))


class ActivationMeter:
    """Counts the bytes autograd saves for backward during a forward pass.

    Parameters (and anything else already counted) are skipped, and each storage is
    counted once, so x saved by both a base layer and its adapter counts once.
    """

    def __init__(self, model: nn.Module) -> None:
        self._skip = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.bytes = 0
        self._seen: set[int] = set()

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in self._seen and ptr not in self._skip:
            self._seen.add(ptr)
            self.bytes += t.untyped_storage().nbytes()
        return t

    @contextlib.contextmanager
    def measure(self) -> Iterator[ActivationMeter]:
        self.bytes = 0
        self._seen.clear()
        with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t):
            yield self


def process_rss_bytes() -> int:
    """Resident memory of this process now (Linux /proc; 0 where unavailable)."""
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def breakdown(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    activations: int,
    measured_peak: int,
) -> MemoryBreakdown:
    """Assemble a :class:`MemoryBreakdown`; ``other`` = measured peak minus the parts."""
    frozen, trainable = parameter_bytes(model)
    grads = grad_bytes(model)
    opt = optimizer_bytes(optimizer) if optimizer is not None else 0
    parts = frozen + trainable + grads + opt + activations
    return MemoryBreakdown(frozen, trainable, grads, opt, activations, max(0, measured_peak - parts))
