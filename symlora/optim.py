"""Optimizer parameter groups that give SymLoRA a LoRA-like start.

With Λ = 0 at init, SymLoRA's first updates move only Λ, and under Adam each step moves
every λᵢ by about lr.  A unit-norm column qᵢ turns that into a rank-one change of norm
s·lr, while LoRA's first step moves all n·r entries of B by about lr: a change about √n
times larger.  So SymLoRA starts slowly (on the digits task: 51 % after 25 steps where LoRA
has 75 %).  Giving each layer's Λ the learning rate lr·√n closes most of that gap and kept
the final accuracy (H200 study, 3 seeds: bench/results/init_study_h200.md) — LoRA+ does the
same for B.  Pass the groups to any torch optimizer.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from .layers import SymLoraLayer
from .model import adapter_layers


def lambda_lr_multiplier(layer: SymLoraLayer, ratio: float | None = None) -> float:
    """Λ's learning-rate multiplier for ``layer``: ``ratio`` if given, else √n."""
    return math.sqrt(layer.n) if ratio is None else ratio


def param_groups(model: nn.Module, lr: float, *, lambda_lr_ratio: float | None = None,
                 weight_decay: float = 0.0) -> list[dict[str, Any]]:
    """Trainable parameters as optimizer groups: one at ``lr``, and one per distinct Λ
    multiplier (``lr·√n`` by default, ``lr·lambda_lr_ratio`` when given).  Weight decay
    never applies to Λ: shrinking eigenvalues towards zero is not a prior we want."""
    lam_ids: dict[int, float] = {}
    for _, layer in adapter_layers(model):
        if isinstance(layer, SymLoraLayer) and layer.lora_lambda.requires_grad:
            lam_ids[id(layer.lora_lambda)] = lambda_lr_multiplier(layer, lambda_lr_ratio)
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in lam_ids]
    groups: list[dict[str, Any]] = [{"params": rest, "lr": lr, "weight_decay": weight_decay}] if rest else []
    by_ratio: dict[float, list[nn.Parameter]] = {}
    for p in model.parameters():
        if id(p) in lam_ids:
            by_ratio.setdefault(lam_ids[id(p)], []).append(p)
    for ratio, params in by_ratio.items():
        groups.append({"params": params, "lr": lr * ratio, "weight_decay": 0.0})
    return groups
