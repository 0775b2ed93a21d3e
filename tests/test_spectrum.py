"""spectrum() against dense decompositions of the explicit ΔW, and symmetric_fraction."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import symlora
from symlora import AdapterConfig

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
        torch.testing.assert_close(spec["0"][b].double().sort().values, top_r_sorted(dense, 3), rtol=1e-4, atol=1e-5)
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
    torch.testing.assert_close(symlora.spectrum(model)["0"][0].sort().values, lam, rtol=0, atol=1e-5)


def test_spectrum_sorted_by_magnitude_and_padded_when_r_exceeds_n():
    model = adapted_model("symlora", "stacked", r=7)  # n = 5 < r = 7: at most 5 non-zero eigenvalues
    spec = symlora.spectrum(model)["0"]
    assert spec.shape == (3, 7)
    assert torch.equal(spec[:, 5:], torch.zeros(3, 2))
    mags = spec.abs()
    assert (mags[:, :-1] >= mags[:, 1:]).all()
    for b, block in enumerate(explicit_blocks(model[0])):
        expected = top_r_sorted(torch.linalg.eigvalsh(block), 5)
        torch.testing.assert_close(spec[b, :5].double().sort().values, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layout", LAYERS)
def test_lora_spectrum_is_singular_values(layout):
    model = adapted_model("lora", layout, r=3)
    layer = model[0]
    spec = symlora.spectrum(model)["0"]
    assert spec.shape == (1, 3)
    dense = torch.linalg.svdvals(layer.scaling * layer.lora_B.weight.double() @ layer.lora_A.weight.double())
    torch.testing.assert_close(spec[0].double(), dense[:3], rtol=1e-4, atol=1e-5)
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
