"""SymLoRA's first optimizer step, as the README's "slow start" section derives it.

Adam's first update moves every trainable scalar by lr·g/(|g| + eps) ≈ lr.  With Λ = 0
only Λ moves, so with orthonormal columns ‖ΔW₁‖ = s·m·lr·√r exactly (m: Λ's learning-rate
multiplier from ``symlora.param_groups``), while LoRA's first step is s·lr·√(n·r/3) on
average: with the default m = √n the two are a factor √3 apart at any width n.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from symlora import AdapterConfig, adapter_layers, inject, param_groups

N, R, ALPHA, LR = 64, 8, 16.0, 1e-3


def first_step(method: str, seed: int, init: str = "gaussian") -> float:
    """‖ΔW‖_F of one n×n layer after one Adam step on a random regression loss; checks
    on the way that the adapted layer is exactly the base layer before that step."""
    torch.manual_seed(seed)
    base = nn.Sequential(nn.Linear(N, N, bias=False))
    model = copy.deepcopy(base)
    inject(model, AdapterConfig(method=method, r=R, lora_alpha=ALPHA, target_modules=["0"], symlora_init=init))
    x, target = torch.randn(32, N), torch.randn(32, N)
    assert torch.equal(model(x), base(x))  # ΔW = 0 at init: exactly the base output
    optimizer = torch.optim.Adam(param_groups(model, LR))
    nn.functional.mse_loss(model(x), target).backward()
    optimizer.step()
    (layer,) = [layer for _, layer in adapter_layers(model)]
    return float(layer.delta_weight().detach().norm())


def test_symlora_first_step_is_s_m_lr_sqrt_r():
    """Orthonormal Q: ΔW₁ = s·Q·diag(±m·lr)·Qᵀ has norm s·m·lr·√r, m = √n by default."""
    s = ALPHA / R
    expected = s * math.sqrt(N) * LR * math.sqrt(R)
    assert first_step("symlora", 0, init="orthogonal") == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_first_step_as_large_as_loras(seed):
    """SymLoRA does not start with a smaller step than LoRA: √3 times LoRA's on average
    (A's rows have norm² 1/3), well inside a factor 1.2–2.5 for any seed at n = 64."""
    lora, sym = first_step("lora", seed), first_step("symlora", seed)
    assert lora == pytest.approx(ALPHA / R * LR * math.sqrt(N * R / 3), rel=0.25)
    assert 1.2 < sym / lora < 2.5
