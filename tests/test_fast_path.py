"""The fused path of the adapter layers (symlora.fast) against the reference formulas.

Every variant the fast path can take (dense or batched blocks, concatenated or separate
forward and backward GEMMs) must give the reference output and the reference gradients
of Q, Λ (or A, B) and x, for square, stacked and side layers, with and without bias.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from symlora import AdapterConfig, LoraLayer, SymLoraLayer
from symlora.fast import fast_path_options
from oracles import reference_symlora_delta

LAYOUTS = {"square": (6, 6), "stacked": (4, 12), "side": (12, 4)}  # (in, out)
VARIANTS = [dict(fold="always"), dict(fold="never")]  # fold: W + ΔW in one GEMM (fp32/fp64); never: added apart
VARIANT_IDS = ["fold", "add"]


def make(method, layout, *, bias=True, r=2, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    n_in, n_out = LAYOUTS[layout]
    base = nn.Linear(n_in, n_out, bias=bias).to(dtype)
    for p in base.parameters():
        p.requires_grad_(False)
    cls = SymLoraLayer if method == "symlora" else LoraLayer
    layer = cls(base, AdapterConfig(method=method, r=r, lora_alpha=3.0))
    with torch.no_grad():  # a non-zero update everywhere (Λ and B start at zero)
        for p in layer.adapter_parameters().values():
            p.copy_(torch.randn_like(p) * 0.5)
    return layer


def reference(layer, x):
    """(y, grads) from the textbook formula with fresh leaves, for an upstream grad g."""
    params = {k: p.detach().clone().requires_grad_(True) for k, p in layer.adapter_parameters().items()}
    x = x.detach().clone().requires_grad_(True)
    base = layer.base_layer
    if isinstance(layer, SymLoraLayer):
        delta = reference_symlora_delta(x, params["lora_Q"], params["lora_lambda"], layer.layout, layer.k, layer.scaling)
    else:
        delta = layer.scaling * F.linear(F.linear(x, params["lora_A.weight"]), params["lora_B.weight"])
    return F.linear(x, base.weight, base.bias) + delta, x, params


def check_against_reference(layer, x, *, atol=1e-8):
    x = x.clone().requires_grad_(True)
    assert layer.uses_fused_path()
    y = layer(x)
    g = torch.randn_like(y)
    (y * g).sum().backward()

    y_ref, x_ref, params = reference(layer, x)
    (y_ref * g).sum().backward()
    assert y.shape == y_ref.shape and y.dtype == y_ref.dtype
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=atol)
    for name, p in layer.adapter_parameters().items():
        assert p.grad is not None and p.grad.shape == p.shape and p.grad.dtype == p.dtype, name
        torch.testing.assert_close(p.grad, params[name].grad, rtol=0, atol=atol, msg=name)
        assert params[name].grad.abs().max() > 0


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_symlora_fast_path_equals_reference(layout, bias, variant):
    layer = make("symlora", layout, bias=bias, r=3)
    x = torch.randn(2, 5, layer.in_features, dtype=torch.float64)  # (batch, tokens, features)
    with fast_path_options(**variant):
        check_against_reference(layer, x)


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_lora_fast_path_equals_plain_formula(layout, bias, variant):
    layer = make("lora", layout, bias=bias, r=3)
    x = torch.randn(3, 4, layer.in_features, dtype=torch.float64)
    with fast_path_options(**variant):
        check_against_reference(layer, x)


@pytest.mark.parametrize("method", ["symlora", "lora"])
def test_fast_path_matches_the_plain_autograd_path(method):
    """The switch only changes speed: same output and gradients as the plain path."""
    layer = make(method, "stacked")
    x = torch.randn(7, layer.in_features, dtype=torch.float64, requires_grad=True)
    results = []
    for enabled in (True, False):
        layer.zero_grad()
        x.grad = None
        with fast_path_options(enabled=enabled):
            assert layer.uses_fused_path() == enabled
            y = layer(x)
            y.pow(2).sum().backward()
        results.append([y.detach(), x.grad.clone()] + [p.grad.clone() for p in layer.adapter_parameters().values()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("method", ["symlora", "lora"])
def test_input_without_grad_and_no_grad_mode(method):
    layer = make(method, "side")
    x = torch.randn(4, layer.in_features, dtype=torch.float64)  # the first layer: x needs no grad
    y = layer(x)
    y.sum().backward()
    assert all(p.grad is not None for p in layer.adapter_parameters().values())
    y_ref, _, _ = reference(layer, x)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), y_ref.detach(), rtol=0, atol=1e-10)


def test_frozen_adapter_still_passes_the_input_gradient():
    layer = make("symlora", "stacked")
    for p in layer.adapter_parameters().values():
        p.requires_grad_(False)
    x = torch.randn(3, layer.in_features, dtype=torch.float64, requires_grad=True)
    layer(x).sum().backward()
    y_ref, x_ref, _ = reference(layer, x)
    y_ref.sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=1e-10)


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("method", ["symlora", "lora"])
def test_bf16_autocast_dtype_and_closeness(method, layout, variant):
    """Under CPU autocast the output has the base layer's dtype and stays close to the
    float64 reference (bf16 precision), and the adapter gradients keep the params' dtype."""
    layer = make(method, layout, dtype=torch.float32, r=2)
    x = torch.randn(2, 8, layer.in_features)
    with fast_path_options(**variant), torch.autocast("cpu", dtype=torch.bfloat16):
        base_out = layer.base_layer(x)
        out = layer(x)
        out.float().sum().backward()
    assert out.dtype == base_out.dtype == torch.bfloat16
    y_ref, _, _ = reference(layer.double(), x.double())
    err = (out.double() - y_ref).norm() / y_ref.norm()
    assert err < 2e-2
    for p in layer.adapter_parameters().values():
        assert p.grad is not None and p.grad.dtype == p.dtype and torch.isfinite(p.grad).all()


def test_update_is_not_rounded_into_a_bf16_weight():
    """A small ΔW beside a large W must survive bf16: the fast path adds x·ΔWᵀ in the
    compute dtype next to x·Wᵀ and never folds ΔW into a rounded copy of W (bf16 keeps
    8 bits: W + ΔW with |W| = 1, |ΔW| ~ 1e-3 would round back to W)."""
    n = 64
    base = nn.Linear(n, n, bias=False).requires_grad_(False)
    with torch.no_grad():
        base.weight.fill_(1.0)
    layer = SymLoraLayer(base, AdapterConfig(method="symlora", r=4))
    with torch.no_grad():
        layer.lora_lambda.fill_(1e-3)
    # Rows of ±1 with as many + as -: x·Wᵀ is exactly 0, so y is the update alone.
    signs = torch.tensor([1.0, -1.0]).repeat(n // 2)
    x = torch.stack([signs[torch.randperm(n)] for _ in range(16)])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    delta = x.double() @ layer.delta_weight().detach().double().T
    assert delta.abs().max() > 1e-3
    torch.testing.assert_close(y.double(), delta, rtol=2e-2, atol=1e-4)


def test_fallbacks_keep_the_plain_formula():
    """Active dropout, a 1×1 conv and a trained base layer take the plain path."""
    dropped = SymLoraLayer(nn.Linear(6, 6), AdapterConfig(method="symlora", r=2, lora_dropout=0.1))
    dropped.base_layer.requires_grad_(False)
    assert not dropped.train().uses_fused_path()
    assert dropped.eval().uses_fused_path()
    conv = SymLoraLayer(nn.Conv2d(4, 12, 1), AdapterConfig(method="symlora", r=2))
    assert not conv.uses_fused_path()
    trained_base = LoraLayer(nn.Linear(6, 6), AdapterConfig(method="lora", r=2))
    assert not trained_base.uses_fused_path()  # base weight still requires grad
    x = torch.randn(3, 6)
    trained_base(x).sum().backward()
    assert trained_base.base_layer.weight.grad is not None


COMPILE_VARIANTS = VARIANTS


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("variant", COMPILE_VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("method,layout", [("symlora", "stacked"), ("symlora", "side"), ("lora", "stacked")])
def test_compiles_without_graph_breaks(method, layout, variant, autocast):
    """Dynamo traces forward and backward in one graph (``fullgraph=True`` fails on any
    break), and the compiled layer computes what the eager one does (aot_eager backend:
    no C++ toolchain needed)."""
    torch._dynamo.reset()
    layer = make(method, layout, dtype=torch.float32)
    x = torch.randn(2, 3, layer.in_features, requires_grad=True)

    def run(module):
        layer.zero_grad()
        x.grad = None
        with fast_path_options(**variant), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = module(x)
        y.float().pow(2).sum().backward()
        return [y.detach().float(), x.grad.clone()] + [p.grad.clone() for p in layer.adapter_parameters().values()]

    got = run(torch.compile(layer, backend="aot_eager", fullgraph=True))
    want = run(layer)
    tol = 2e-2 if autocast else 1e-5
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_fold_only_pays_for_many_rows(monkeypatch):
    """By default W + ΔW is formed only for a batch with at least max(in, out) rows; for a
    few rows (generating token by token) the update is added beside x·Wᵀ — same result."""
    from symlora import fast

    layer = make("symlora", "stacked", dtype=torch.float32)  # in 4, out 12
    calls = []
    real = fast.fold_weight
    monkeypatch.setattr(fast, "fold_weight", lambda *a: calls.append(1) or real(*a))
    for rows, folds in ((3, False), (12, True)):
        calls.clear()
        x = torch.randn(rows, layer.in_features, requires_grad=True)
        y = layer(x)
        y.sum().backward()
        assert bool(calls) == folds
        y_ref, _, _ = reference(layer, x)
        torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)


def test_threads_keep_their_own_fast_path_choice():
    """Two training threads with different settings, both inside their ``with`` block at
    once: each layer call sees its own thread's choice, and neither leaks into the other
    or outlives its block (the app trains in threads while a benchmark may switch)."""
    import threading

    from symlora import fast

    layer = make("symlora", "stacked")
    x = torch.randn(5, layer.in_features, dtype=torch.float64)
    y_ref = reference(layer, x)[0].detach()
    inside = threading.Barrier(2, timeout=30)
    seen: dict[str, tuple] = {}

    def train(name, **options):
        with fast_path_options(**options):
            inside.wait()  # both threads now hold their own setting
            fused = layer.uses_fused_path()
            with torch.no_grad():
                y = layer(x)
            seen[name] = (fused, fast.current_options(), y)
            inside.wait()  # neither leaves its block before the other has looked
        seen[name + " after"] = (fast.current_options(),)

    threads = [threading.Thread(target=train, args=("plain",), kwargs=dict(enabled=False)),
               threading.Thread(target=train, args=("fused",), kwargs=dict(fold="never"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen["plain"][:2] == (False, fast.FastPathOptions(enabled=False))
    assert seen["fused"][:2] == (True, fast.FastPathOptions(fold="never"))
    for name in ("plain", "fused"):
        torch.testing.assert_close(seen[name][2], y_ref, rtol=0, atol=1e-10)
        assert seen[name + " after"] == (fast.FastPathOptions(),)
    assert fast.current_options() == fast.FastPathOptions() and layer.uses_fused_path()

    with fast_path_options(enabled=False):  # a thread started inside a block starts from the defaults
        child: list[bool] = []
        t = threading.Thread(target=lambda: child.append(layer.uses_fused_path()))
        t.start()
        t.join()
        assert child == [True] and not layer.uses_fused_path()


def test_bad_fast_path_options_are_refused_in_one_line():
    from symlora import fast

    with pytest.raises(AttributeError, match="unknown fast-path option 'fused'"):
        with fast_path_options(fused=False):
            pass
    with pytest.raises(ValueError, match="fold must be"):
        with fast_path_options(fold="sometimes"):
            pass
    with pytest.raises(AttributeError, match="fast_path_options"):
        fast.OPTIONS  # noqa: B018 — the former global switch says where to go
    assert fast.current_options() == fast.FastPathOptions()
