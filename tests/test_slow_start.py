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

from conftest import load_bench

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


def _bench():
    """bench/slow_start.py as a module."""
    return load_bench("slow_start")


@pytest.mark.parametrize("index", [11, 12])  # Λ₀ with a frozen offset; Λ₀ in ± twin pairs
def test_nonzero_starts_are_an_exact_no_op_and_train(index):
    """The bench's non-zero Λ₀ starts compute exactly the base output before the first
    step, move ΔW at the first step, and its cheap ‖ΔW‖ (thin factors) is ΔW's own norm."""
    bench = _bench()
    variant = bench.VARIANTS[index]
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(N, N, bias=False))
    model = copy.deepcopy(base)
    inject(model, AdapterConfig(method="symlora", r=R, lora_alpha=ALPHA, target_modules=["0"]))
    bench.set_start(model, variant)
    x, target = torch.randn(32, N), torch.randn(32, N)
    assert torch.equal(model(x), base(x))
    (layer,) = [layer for _, layer in adapter_layers(model)]
    assert float(layer.lora_lambda.detach().abs().min()) == pytest.approx(variant.lam0)  # Λ₀ really is non-zero
    optimizer = torch.optim.Adam(bench.optimizer_groups(model, variant, LR))
    nn.functional.mse_loss(model(x), target).backward()
    assert float(layer.lora_Q.grad.norm()) > 0  # Q learns from the first step, unlike the Λ₀ = 0 start
    optimizer.step()
    norm = float(layer.delta_weight().detach().norm())
    assert norm > 0
    assert bench.delta_stats(model)["dw_norm"] == pytest.approx(norm, rel=1e-6)


def test_delta_stats_survive_a_diverged_run():
    """A NaN ΔW (a diverging learning rate) gives NaN statistics instead of a LAPACK abort."""
    bench = _bench()
    model = nn.Sequential(nn.Linear(N, N, bias=False))
    inject(model, AdapterConfig(method="symlora", r=R, target_modules=["0"]))
    with torch.no_grad():
        model[0].lora_lambda.fill_(float("nan"))
    assert math.isnan(bench.delta_stats(model)["dw_norm"])


def test_lr_is_chosen_where_every_seed_ran():
    """A wide grid at seed 0 joined by seeds 1–2 on a window: the rate is chosen on the
    three-seed mean inside the window, never on a one-seed rate outside it, and a one-seed
    row is compared with LoRA's seed 0 alone."""
    bench = _bench()

    def run(variant: str, lr: float, seed: int, val: float) -> dict:
        return {"variant": variant, "lr": lr, "steps": 12, "seed": seed, "val_ppl": val, "test_ppl": val + 1,
                "trainable_params": 1, "checkpoints": {}, "first_lr": lr}

    lora = bench.VARIANTS[0].name
    rows = [run(lora, 1e-3, 0, 10.0), run(lora, 4e-3, 0, 30.0), run(lora, 8e-3, 0, 20.0)]
    rows += [run(lora, lr, s, v) for s in (1, 2) for lr, v in ((4e-3, 21.0), (8e-3, 25.0))]
    pick = bench.choose(rows)
    assert pick["seeds"] == [0, 1, 2] and pick["window"] == [4e-3, 8e-3]
    assert pick["best"] == 8e-3  # mean 23.3 against 24.0; the one-seed 1e-3 (10.0) is outside the window
    assert bench.choose(rows, [0])["best"] == 1e-3
    other = bench.VARIANTS[4].name
    summary = bench.summarise(rows + [run(other, 1e-3, 0, 12.0)], [bench.VARIANTS[0], bench.VARIANTS[4]])
    (row,) = [s for s in summary if s["variant"] == other]
    assert row["lora_ref_lr"] == 1e-3 and row["val_vs_lora"] == pytest.approx(0.2)


def test_more_seeds_on_a_window_around_each_seed0_best():
    """--around: seeds 1–2 at the seed-0 best and its neighbours ×2 apart, per step count;
    a neighbour the seed-0 grid lacked (a best at its edge) gets seed 0 too, so every rate of
    the window is compared on the same seeds."""
    bench = _bench()
    v = bench.VARIANTS[1]

    def run(lr: float, steps: int, val: float) -> dict:
        return {"variant": v.name, "lr": lr, "steps": steps, "seed": 0, "val_ppl": val}

    grid = [run(1e-3, 12, 30.0), run(2e-3, 12, 20.0), run(4e-3, 12, 25.0), run(1e-3, 36, 15.0), run(2e-3, 36, 18.0)]
    jobs, windows = bench.window_jobs(grid, [v, bench.VARIANTS[4]], [12, 36], [1, 2])
    assert windows == {v.name: {12: [1e-3, 2e-3, 4e-3], 36: [5e-4, 1e-3, 2e-3]}}  # VARIANTS[4] has no grid: skipped
    planned = sorted((j.steps, j.lr, j.seed) for j in jobs)
    assert planned == sorted([(12, lr, s) for lr in (1e-3, 2e-3, 4e-3) for s in (1, 2)]
                             + [(36, lr, s) for lr in (5e-4, 1e-3, 2e-3) for s in (1, 2)] + [(36, 5e-4, 0)])
