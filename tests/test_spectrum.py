"""spectrum() against dense decompositions of the explicit ΔW, and symmetric_fraction."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import symlora
from symlora import AdapterConfig
from numerics import assert_within, eps, sum_bound

LAYERS = {"square": (6, 6), "stacked": (5, 15), "side": (15, 5)}  # n = 6 or 5, k = 1 or 3


def adapted_model(method, layout, r=3, seed=0, **cfg):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(*LAYERS[layout]))
    symlora.inject(model, AdapterConfig(method=method, r=r, lora_alpha=2.0, target_modules=["0"], **cfg))
    with torch.no_grad():  # random LoRA B / random Λ with signs + − + − … (never near zero)
        for name, p in model[0].adapter_parameters().items():
            p.copy_(torch.randn(p.shape))
            if name == "lora_lambda":
                p.copy_((p.abs() + 0.2) * (-1.0) ** torch.arange(p.numel()))
    return model


def explicit_blocks(layer):
    dw = layer.delta_weight().detach().double()
    n, k = layer.n, layer.k
    if layer.layout == "side":
        return [dw[:, b * n:(b + 1) * n] for b in range(k)]
    return [dw[b * n:(b + 1) * n] for b in range(k)]


@torch.no_grad()
def eigen_bound(layer, values):
    """How far float32 eigenvalues may sit from those of the explicit blocks: the blocks
    are float32 sums of r products (entrywise error ≤ sum_bound of the same sums in
    absolute value), an error E moves each eigenvalue by at most ‖E‖₂ ≤ ‖E‖_F (Weyl), and
    the result is rounded to float32 once (eps·|λ|)."""
    import copy

    absolute = copy.deepcopy(layer)
    for p in absolute.adapter_parameters().values():
        p.abs_()
    frob = max(float(sum_bound(block, roundings=2 * (layer.r + 2)).norm()) for block in explicit_blocks(absolute))
    return frob + eps(torch.float32) * values.abs()


def top_r_sorted(values, r):
    """The r eigenvalues of largest magnitude (the others are ΔW's zeros), sorted."""
    return values[values.abs().argsort(descending=True)[:r]].sort().values


@pytest.mark.parametrize("use_rslora", [False, True])
@pytest.mark.parametrize("layout", LAYERS)
def test_symlora_spectrum_is_eigenvalues_of_each_block(layout, use_rslora):
    model = adapted_model("symlora", layout, r=3, use_rslora=use_rslora)
    layer = model[0]
    spec = symlora.spectrum(model)
    assert list(spec) == ["0"]
    assert spec["0"].shape == (layer.k, 3)
    for b, block in enumerate(explicit_blocks(layer)):
        dense = torch.linalg.eigvalsh(block)
        expected = top_r_sorted(dense, 3)
        assert_within(spec["0"][b].double().sort().values, expected, eigen_bound(layer, expected), "eigenvalues")
        # signed, unlike singular values; Sylvester's law of inertia: the signs are those of Λ_b
        lam_b = layer.lora_lambda.detach().view(layer.k, 3)[b]
        assert (spec["0"][b] > 0).sum() == (lam_b > 0).sum() > 0
        assert (spec["0"][b] < 0).sum() == (lam_b < 0).sum() > 0


def test_symlora_spectrum_is_not_lambda_when_q_is_not_orthonormal():
    layer = adapted_model("symlora", "square")[0]
    lam = (layer.lora_lambda.detach() * layer.scaling).sort().values
    assert not torch.allclose(symlora.spectrum(nn.Sequential(layer))["0"][0].sort().values, lam, atol=1e-3)


def test_symlora_spectrum_with_orthonormal_q_is_scaled_lambda():
    model = adapted_model("symlora", "square")  # random Q, then made orthonormal below
    layer = model[0]
    layer.reset_q("orthogonal", 1.0)
    lam = (layer.lora_lambda.detach() * layer.scaling).sort().values
    # Q made orthonormal in float32: QᵀQ = I + F with |F| ≤ n roundings, so each eigenvalue
    # of Q·diag(Λ)·Qᵀ is Λ's within ‖F‖·max|Λ| (plus one float32 rounding of the result).
    q = layer.lora_Q.detach().double()
    gap = float((q.T @ q - torch.eye(q.shape[1], dtype=torch.float64)).norm())
    bound = gap * float(lam.abs().max()) + layer.n * eps(torch.float32) * lam.abs().double()
    assert_within(symlora.spectrum(model)["0"][0].sort().values, lam, bound, "eigenvalues vs scaled Λ")


def test_spectrum_sorted_by_magnitude_and_padded_when_r_exceeds_n():
    model = adapted_model("symlora", "stacked", r=7)  # n = 5 < r = 7: at most 5 non-zero eigenvalues
    spec = symlora.spectrum(model)["0"]
    assert spec.shape == (3, 7)
    assert torch.equal(spec[:, 5:], torch.zeros(3, 2))
    mags = spec.abs()
    assert (mags[:, :-1] >= mags[:, 1:]).all()
    for b, block in enumerate(explicit_blocks(model[0])):
        expected = top_r_sorted(torch.linalg.eigvalsh(block), 5)
        assert_within(spec[b, :5].double().sort().values, expected, eigen_bound(model[0], expected), "eigenvalues")


@pytest.mark.parametrize("layout", LAYERS)
def test_lora_spectrum_is_singular_values(layout):
    model = adapted_model("lora", layout, r=3)
    layer = model[0]
    spec = symlora.spectrum(model)["0"]
    assert spec.shape == (1, 3)
    dense = torch.linalg.svdvals(layer.scaling * layer.lora_B.weight.double() @ layer.lora_A.weight.double())
    # Both from the same float32 factors in float64: they differ by float64 rounding and
    # the final float32 rounding of ours (half an ulp of each value).
    assert_within(spec[0].double(), dense[:3], eps(torch.float32) * dense[:3] + 1e3 * eps(torch.float64) * dense[0],
                  "singular values")
    assert (spec[0, :-1] >= spec[0, 1:]).all()


def test_spectrum_keys_are_module_paths(make_vit):
    model = symlora.inject(make_vit(), AdapterConfig(r=2, target_modules=["qkv", "proj", "fc2"]))
    spec = symlora.spectrum(model)
    assert sorted(spec) == sorted(n for n, _ in symlora.adapter_layers(model))
    assert spec["blocks.0.attn.proj"].shape == (1, 2)
    assert spec["blocks.0.attn.qkv"].shape == (3, 2)
    assert spec["blocks.1.mlp.fc2"].shape == (4, 2)
    assert all(v.abs().max() == 0 for v in spec.values())  # ΔW = 0 at init


def test_symmetric_fraction():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(300, 300, generator=g)
    assert symlora.symmetric_fraction(m + m.T) == pytest.approx(1.0, abs=1e-12)
    assert symlora.symmetric_fraction(m - m.T) == pytest.approx(0.0, abs=1e-12)
    assert symlora.symmetric_fraction(m) == pytest.approx(0.5, abs=0.02)
    a, b = torch.randn(20, 300, generator=g), torch.randn(300, 20, generator=g)  # a random LoRA update
    assert 0.3 < symlora.symmetric_fraction(b @ a) < 0.7
    with pytest.raises(ValueError):
        symlora.symmetric_fraction(torch.randn(3, 4))


def test_symmetric_fraction_of_a_symlora_block_is_one():
    layer = adapted_model("symlora", "side")[0]
    for block in explicit_blocks(layer):
        assert symlora.symmetric_fraction(block) == pytest.approx(1.0, abs=1e-12)
