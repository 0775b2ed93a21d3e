"""Test oracles: the textbook formulas, written apart from the library's own code."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def reference_symlora_delta(x: Tensor, q: Tensor, lam: Tensor, layout: str, k: int, scaling: float) -> Tensor:
    """x·ΔWᵀ with ΔW built explicitly: block b = Q_b·diag(Λ_b)·Q_bᵀ (Q_b = columns b·r … of
    Q), the k blocks stacked along the output (``stacked``, ``square``) or set side by side
    along the input (``side``), times ``scaling``.  The oracle for the fast and plain paths."""
    n, kr = q.shape
    r = kr // k
    blocks = [q[:, b * r:(b + 1) * r] @ torch.diag(lam[b * r:(b + 1) * r]) @ q[:, b * r:(b + 1) * r].T
              for b in range(k)]
    dw = torch.cat(blocks, dim=1 if layout == "side" else 0) * scaling
    return F.linear(x, dw)
