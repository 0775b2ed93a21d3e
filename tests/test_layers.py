"""Adapter layers against explicit formulas: symmetry, parameter counts, gradients,
scaling, dropout, 1×1 convolutions and bf16 autocast."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import symlora
from symlora import AdapterConfig, LoraLayer, SymLoraLayer
from oracles import reference_symlora_delta
from numerics import assert_within, sum_bound

# (in, out) → layout, k blocks, block size n
LAYOUTS = {
    "square": ((6, 6), 1, 6),
    "stacked": ((4, 12), 3, 4),  # out = 3·in, like a fused qkv
    "side": ((12, 4), 3, 4),  # in = 3·out, like an MLP fc2 or a GQA k_proj
}
METHODS = ("symlora", "lora")


def make_layer(method, layout, r=2, dtype=torch.float32, conv=False, **cfg):
    (n_in, n_out), _, _ = LAYOUTS[layout]
    base = nn.Conv2d(n_in, n_out, 1) if conv else nn.Linear(n_in, n_out)
    base = base.to(dtype)
    config = AdapterConfig(method=method, r=r, **cfg)
    return (SymLoraLayer if method == "symlora" else LoraLayer)(base, config)


@torch.no_grad()
def set_random(layer, seed=0, scale=0.5):
    """A non-zero ΔW: random Λ (SymLoRA) or random B (LoRA)."""
    g = torch.Generator().manual_seed(seed)
    for p in layer.adapter_parameters().values():
        p.copy_((torch.randn(p.shape, generator=g, dtype=torch.float64) * scale).to(p.dtype))


@torch.no_grad()
def abs_layer(layer):
    """A copy of ``layer`` with every adapter weight replaced by its absolute value: its ΔW
    is Σ|terms| of the layer's ΔW, the scale its rounding errors are measured against."""
    import copy

    copy_ = copy.deepcopy(layer)
    for p in copy_.adapter_parameters().values():
        p.abs_()
    return copy_


def explicit_delta_weight(layer):
    """ΔW (out × in) from the textbook formula, independent of the layer's own code."""
    if isinstance(layer, SymLoraLayer):
        eye = torch.eye(layer.in_features, dtype=layer.lora_Q.dtype)
        q, lam = layer.lora_Q.detach(), layer.lora_lambda.detach()
        return reference_symlora_delta(eye, q, lam, layer.layout, layer.k, layer.scaling).T
    return layer.scaling * layer.lora_B.weight.detach() @ layer.lora_A.weight.detach()


def blocks_of(dw, layout, k, n):
    if layout == "side":
        return [dw[:, b * n:(b + 1) * n] for b in range(k)]
    return [dw[b * n:(b + 1) * n, :] for b in range(k)]


# -- SymLoRA structure ---------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_symlora_block_is_symmetric(layout):
    layer = make_layer("symlora", layout, r=3)
    set_random(layer)
    _, k, n = LAYOUTS[layout]
    assert (layer.layout, layer.k, layer.n) == (layout, k, n)
    dw = layer.delta_weight().detach()
    assert dw.shape == (layer.out_features, layer.in_features)
    # Each entry is a float32 sum of r products s·q·λ·q: two orderings of it differ by at
    # most a few roundings of Σ|s·q·λ·q| (the same sum with absolute values).
    magnitude = explicit_delta_weight(abs_layer(layer)).abs()
    assert_within(dw, explicit_delta_weight(layer), sum_bound(magnitude, roundings=2 * (layer.r + 2)), "ΔW")
    for block, mag in zip(blocks_of(dw, layout, k, n), blocks_of(magnitude, layout, k, n)):
        assert block.abs().max() > 0
        assert_within(block, block.T, sum_bound(mag, roundings=2 * (layer.r + 2)), "block vs its transpose")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("method", METHODS)
def test_trainable_params_match_formula(method, layout):
    (n_in, n_out), k, n = LAYOUTS[layout]
    r = 2
    model = nn.Sequential(nn.Linear(n_in, n_out))
    symlora.inject(model, AdapterConfig(method=method, r=r, target_modules=["0"]))
    expected = r * (n_in + n_out) if method == "lora" else k * (n * r + r)
    count = symlora.count_parameters(model)
    assert count.trainable == expected
    assert count.total == expected + n_in * n_out + n_out
    assert [(row.name, row.kind, row.trainable) for row in count.rows] == [("0", method, expected)]


def test_symlora_has_about_half_of_loras_params_on_a_square_layer():
    n, r = 64, 8
    sym = symlora.inject(nn.Sequential(nn.Linear(n, n)), AdapterConfig(method="symlora", r=r, target_modules=["0"]))
    lora = symlora.inject(nn.Sequential(nn.Linear(n, n)), AdapterConfig(method="lora", r=r, target_modules=["0"]))
    assert symlora.count_parameters(sym).trainable == n * r + r
    assert symlora.count_parameters(lora).trainable == 2 * n * r


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("method", METHODS)
def test_adapter_starts_as_a_no_op(method, layout):
    layer = make_layer(method, layout)
    x = torch.randn(5, layer.in_features)
    assert torch.equal(layer(x), layer.base_layer(x))
    assert layer.delta_weight().abs().max() == 0


@pytest.mark.parametrize("init", ["gaussian", "orthogonal"])
def test_symlora_init_is_random_q_and_zero_lambda(init):
    layer = make_layer("symlora", "stacked", r=3, symlora_init=init, init_scale=2.0)
    assert torch.equal(layer.lora_lambda, torch.zeros(layer.k * layer.r))
    assert layer.lora_Q.abs().min() > 0  # Q = 0 would be a saddle: no gradient at all
    if init == "orthogonal":
        for b in range(layer.k):
            qb = layer.q_blocks()[:, b, :].detach()
            bound = sum_bound(qb.abs().T @ qb.abs(), roundings=2 * qb.shape[0])  # n-term dot products
            assert_within(qb.T @ qb, 4.0 * torch.eye(layer.r), bound, "QᵀQ")


# -- gradients against autograd through the explicit ΔW -----------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("at_init", [False, True], ids=["random", "init"])
def test_symlora_gradients_match_explicit_formula(layout, at_init):
    torch.manual_seed(0)
    layer = make_layer("symlora", layout, r=2, dtype=torch.float64, lora_alpha=3.0)
    if not at_init:
        set_random(layer)
    x = torch.randn(2, 3, layer.in_features, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    g = torch.randn_like(y)
    (y * g).sum().backward()

    q = layer.lora_Q.detach().clone().requires_grad_(True)
    lam = layer.lora_lambda.detach().clone().requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    y_ref = layer.base_layer(x_ref) + reference_symlora_delta(x_ref, q, lam, layer.layout, layer.k, layer.scaling)
    (y_ref * g).sum().backward()

    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(layer.lora_Q.grad, q.grad, rtol=0, atol=1e-8)
    torch.testing.assert_close(layer.lora_lambda.grad, lam.grad, rtol=0, atol=1e-8)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=1e-8)
    assert layer.lora_lambda.grad.abs().max() > 0  # Λ learns from step 0


@pytest.mark.parametrize("layout", LAYOUTS)
def test_lora_forward_matches_explicit_formula(layout):
    layer = make_layer("lora", layout, r=2, dtype=torch.float64, lora_alpha=5.0)
    set_random(layer)
    x = torch.randn(7, layer.in_features, dtype=torch.float64)
    a, b = layer.lora_A.weight.detach(), layer.lora_B.weight.detach()
    expected = layer.base_layer(x) + (5.0 / 2) * x @ a.T @ b.T
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-12)


# -- scaling and dropout ----------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("use_rslora", [False, True])
def test_scaling_is_alpha_over_r_or_sqrt_r(method, use_rslora):
    r, alpha = 4, 8.0
    layer = make_layer(method, "square", r=r, dtype=torch.float64, lora_alpha=alpha, use_rslora=use_rslora)
    expected_s = alpha / math.sqrt(r) if use_rslora else alpha / r
    assert layer.scaling == pytest.approx(expected_s)
    set_random(layer)
    if method == "symlora":
        q, lam = layer.lora_Q.detach(), layer.lora_lambda.detach()
        unscaled = q @ torch.diag(lam) @ q.T
    else:
        unscaled = layer.lora_B.weight.detach() @ layer.lora_A.weight.detach()
    torch.testing.assert_close(layer.delta_weight().detach(), expected_s * unscaled, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_dropout_eval_mode_is_deterministic(method):
    layer = make_layer(method, "side", lora_dropout=0.5).eval()
    set_random(layer)
    x = torch.randn(16, layer.in_features)
    y1, y2 = layer(x), layer(x)
    assert torch.equal(y1, y2)
    torch.testing.assert_close(y1, layer.base_layer(x) + x @ explicit_delta_weight(layer).T)


@pytest.mark.parametrize("method", METHODS)
def test_dropout_never_touches_the_base_path(method):
    layer = make_layer(method, "stacked", lora_dropout=0.5).train()
    x = torch.randn(16, layer.in_features)
    assert torch.equal(layer(x), layer.base_layer(x))  # ΔW = 0: exactly the base output


@pytest.mark.parametrize("method", METHODS)
def test_dropout_applies_to_the_adapter_input_only(method):
    layer = make_layer(method, "square", lora_dropout=0.5).train()
    set_random(layer)
    x = torch.randn(16, layer.in_features)
    torch.manual_seed(7)
    y = layer(x)
    torch.manual_seed(7)
    h = F.dropout(x, 0.5, training=True)
    expected = layer.base_layer(x) + h @ explicit_delta_weight(layer).T
    torch.testing.assert_close(y, expected)
    assert not torch.allclose(y, layer.base_layer(x) + x @ explicit_delta_weight(layer).T)


# -- 1×1 convolutions ------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("method", METHODS)
def test_conv1x1_adapter_equals_linear_formula_and_merges(method, layout):
    layer = make_layer(method, layout, r=2, conv=True)
    set_random(layer)
    x = torch.randn(2, layer.in_features, 3, 5)
    w = layer.base_layer.weight.detach().clone()
    bias = layer.base_layer.bias.detach()
    w2d = w[:, :, 0, 0] + explicit_delta_weight(layer)
    expected = F.linear(x.movedim(1, -1), w2d, bias).movedim(-1, 1)
    y = layer(x)
    # One layer: outputs are n-term dot products of x with W + ΔW (|ΔW| bounded by the
    # absolute-value layer's ΔW); two orderings differ by a few roundings of Σ|terms|.
    delta_mag = explicit_delta_weight(abs_layer(layer)).abs()
    magnitude = F.linear(x.movedim(1, -1).abs(), w[:, :, 0, 0].abs() + delta_mag, bias.abs()).movedim(-1, 1)
    bound = sum_bound(magnitude, roundings=2 * (layer.in_features + layer.r + 2))
    assert_within(y, expected, bound, "conv adapter vs formula")

    layer.merge()
    with torch.no_grad():
        assert_within(layer(x), y, bound, "merged conv")
    layer.unmerge()
    # W + ΔW − ΔW: two roundings of terms of size |W| + |ΔW|.
    assert_within(layer.base_layer.weight.detach()[:, :, 0, 0], w[:, :, 0, 0],
                  sum_bound(w[:, :, 0, 0], delta_mag, roundings=2), "W after unmerge")


def test_only_1x1_stride1_convs_are_adaptable():
    config = AdapterConfig(method="lora", r=2)
    with pytest.raises(TypeError):
        LoraLayer(nn.Conv2d(4, 4, 3), config)
    with pytest.raises(TypeError):
        LoraLayer(nn.Conv2d(4, 4, 1, stride=2), config)


def test_symlora_layer_refuses_incompatible_shape():
    with pytest.raises(ValueError, match=r"in=6, out=4"):
        SymLoraLayer(nn.Linear(6, 4), AdapterConfig(method="symlora", r=2))


# -- dtypes -----------------------------------------------------------------------------


@pytest.mark.parametrize("conv", [False, True], ids=["linear", "conv1x1"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("method", METHODS)
def test_bf16_autocast_output_dtype_matches_base(method, layout, conv):
    layer = make_layer(method, layout, conv=conv)
    set_random(layer)
    x = torch.randn(2, layer.in_features, 3, 3) if conv else torch.randn(4, layer.in_features)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        base_out = layer.base_layer(x)
        out = layer(x)
        out.float().sum().backward()
    assert base_out.dtype == torch.bfloat16
    assert out.dtype == base_out.dtype
    assert torch.isfinite(out).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.adapter_parameters().values())
