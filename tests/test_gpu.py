"""The fused adapter path on CUDA: exact in float64, right dtypes and close under bf16
autocast, and compiled by Inductor in one graph.  Skipped without a CUDA device."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import symlora
from symlora import AdapterConfig
from symlora.fast import fast_path_options

from test_fast_path import LAYOUTS, VARIANT_IDS, VARIANTS, check_against_reference, make, reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CUDA = torch.device("cuda")


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("method", ["symlora", "lora"])
def test_fast_path_equals_reference_on_cuda_float64(method, layout, bias, variant):
    layer = make(method, layout, bias=bias, r=3).to(CUDA)
    x = torch.randn(2, 5, layer.in_features, dtype=torch.float64, device=CUDA)
    with fast_path_options(**variant):
        check_against_reference(layer, x)


@pytest.mark.parametrize("variant", [*VARIANTS, {}], ids=[*VARIANT_IDS, "auto"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("method", ["symlora", "lora"])
def test_bf16_autocast_on_cuda(method, layout, variant):
    """Output dtype = the base layer's under autocast; output and gradients close to the
    float64 reference (bf16 accuracy); adapter gradients in the parameters' dtype."""
    layer = make(method, layout, dtype=torch.float32, r=4).to(CUDA)
    x = torch.randn(4, 64, layer.in_features, device=CUDA, requires_grad=True)
    with fast_path_options(**variant), torch.autocast("cuda", dtype=torch.bfloat16):
        base_out = layer.base_layer(x)
        out = layer(x)
    assert out.dtype == base_out.dtype == torch.bfloat16
    g = torch.randn_like(out, dtype=torch.float32)
    (out.float() * g).sum().backward()

    ref_layer = make(method, layout, dtype=torch.float64, r=4).to(CUDA)
    ref_layer.load_state_dict({k: v.double() for k, v in layer.state_dict().items()})
    y_ref, x_ref, params = reference(ref_layer, x.detach().double())
    (y_ref * g.double()).sum().backward()

    def rel(a, b):
        return ((a.double() - b).norm() / b.norm()).item()

    assert rel(out, y_ref) < 1e-2
    assert rel(x.grad, x_ref.grad) < 2e-2
    for name, p in layer.adapter_parameters().items():
        assert p.grad.dtype == torch.float32
        assert rel(p.grad, params[name].grad) < 3e-2, name


def tiny_attention_model():
    """Two blocks whose attention has a fused qkv (stacked) and a square proj."""

    class Block(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.norm = nn.LayerNorm(d)
            self.qkv = nn.Linear(d, 3 * d)
            self.proj = nn.Linear(d, d)

        def forward(self, x):
            q, k, v = self.qkv(self.norm(x)).chunk(3, dim=-1)
            a = torch.nn.functional.scaled_dot_product_attention(q, k, v)
            return x + self.proj(a)

    torch.manual_seed(0)
    return nn.Sequential(Block(64), Block(64)).to(CUDA)


@pytest.mark.parametrize("method", ["symlora", "lora"])
def test_torch_compile_smoke(method):
    """Inductor compiles forward and backward in one graph (``fullgraph=True`` raises on
    any graph break) and computes what eager mode does, under bf16 autocast."""
    torch._dynamo.reset()
    model = tiny_attention_model()
    symlora.inject(model, AdapterConfig(method=method, r=8, target_modules=["qkv", "proj"]))
    with torch.no_grad():
        for _, layer in symlora.adapter_layers(model):
            for p in layer.adapter_parameters().values():
                p.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(4, 32, 64, device=CUDA, requires_grad=True)

    def run(module):
        model.zero_grad()
        x.grad = None
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = module(x)
        y.float().pow(2).mean().backward()
        return [y.float().detach(), x.grad.clone()] + [p.grad.clone() for p in model.parameters() if p.requires_grad]

    compiled = torch.compile(model, fullgraph=True)
    got = run(compiled)
    got = run(compiled)  # a second call: no recompilation problems
    want = run(model)
    for a, b in zip(got, want):
        assert ((a - b).norm() / b.norm().clamp_min(1e-12)).item() < 2e-2
