"""The rectangular-layer variants of bench/rectangular.py: each ΔW is its formula, each
weight count is its formula, each starts exactly at the base model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import load_bench


@pytest.fixture(scope="module")
def rect():
    return load_bench("rectangular")


# (in, out): stacked (expand ×3), side by side (project ÷4), square
SHAPES = [(4, 12), (12, 3), (5, 5)]
METHODS = ["lora", "symlora", "shared-q", "sym+lora", "narrow", "svd"]


def base_layer(shape: tuple[int, int], conv: bool) -> nn.Module:
    torch.manual_seed(1)
    i, o = shape
    layer = nn.Conv2d(i, o, 1, bias=False) if conv else nn.Linear(i, o)
    return layer.double()


def randomise(layer: nn.Module) -> None:
    """Give every adapter tensor (also those that start at zero) random values."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if not name.startswith("base_layer."):
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))


def explicit(layer, method: str) -> torch.Tensor:
    """ΔW from the method's formula, written out block by block."""
    s = layer.scaling
    i, o = layer.in_features, layer.out_features

    def stack(blocks: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(blocks, dim=1 if i > o else 0)

    if method == "lora":
        return s * layer.lora_B.weight @ layer.lora_A.weight
    if method in ("symlora", "sym+lora"):
        n, r = layer.n, layer.r
        blocks = []
        for b in range(layer.k):
            q = layer.lora_Q[:, b * r:(b + 1) * r]
            blocks.append(q @ torch.diag(s * layer.lora_lambda[b * r:(b + 1) * r]) @ q.T)
        dw = stack(blocks)
        if method == "sym+lora":
            dw = dw + layer.expected_remainder_scaling * layer.lora_B @ layer.lora_A
        assert dw.shape == (o, i) and n == min(i, o)
        return dw
    if method == "shared-q":
        q = layer.lora_Q
        return stack([q @ torch.diag(s * layer.lora_lambda[b]) @ q.T for b in range(layer.k)])
    if method == "narrow":
        q = layer.lora_Q
        sym = q @ torch.diag(s * layer.lora_lambda) @ q.T
        w = layer.base_layer.weight.reshape(o, i)
        return w @ sym if i <= o else sym @ w
    if method == "svd":
        return layer.lora_Q_out @ torch.diag(s * layer.lora_lambda) @ layer.lora_Q_in.T
    raise AssertionError(method)


def make(rect, method: str, shape: tuple[int, int], conv: bool):
    layer = rect.make_layer(method, base_layer(shape, conv), r=2, remainder_r=1, lora_alpha=6.0)
    layer.expected_remainder_scaling = 6.0 / 1  # s' = lora_alpha / remainder_r
    return layer


def inputs(shape: tuple[int, int], conv: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    if conv:
        return torch.randn(2, shape[0], 3, 3, generator=g, dtype=torch.float64)
    return torch.randn(7, shape[0], generator=g, dtype=torch.float64)


def as_linear(y: torch.Tensor, conv: bool) -> torch.Tensor:
    return y.movedim(1, -1).reshape(-1, y.shape[1]) if conv else y


@pytest.mark.parametrize("conv", [False, True], ids=["linear", "conv1x1"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}to{s[1]}")
@pytest.mark.parametrize("method", METHODS)
def test_delta_weight_and_forward_follow_the_formula(rect, method, shape, conv):
    layer = make(rect, method, shape, conv)
    randomise(layer)
    dw = explicit(layer, method)
    assert torch.allclose(layer.delta_weight(), dw, rtol=1e-10, atol=1e-12)
    x = inputs(shape, conv)
    y = as_linear(layer(x), conv)
    x2 = as_linear(x, conv)
    w = layer.base_layer.weight.reshape(shape[1], shape[0])
    bias = layer.base_layer.bias if layer.base_layer.bias is not None else 0.0
    assert torch.allclose(y, x2 @ (w + dw).T + bias, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}to{s[1]}")
@pytest.mark.parametrize("method", METHODS)
def test_weight_count_is_the_formula(rect, method, shape):
    layer = make(rect, method, shape, conv=False)
    counted = sum(p.numel() for p in layer.adapter_parameters().values())
    i, o = shape
    n, k = min(i, o), max(i, o) // min(i, o)
    by_hand = {"lora": 2 * (i + o), "symlora": k * 2 * (n + 1), "shared-q": 2 * (n + k),
               "sym+lora": k * 2 * (n + 1) + 1 * (i + o), "narrow": 2 * (n + 1), "svd": 2 * (i + o + 1)}[method]
    assert counted == by_hand == rect.layer_count(method, i, o, 2, 1)


@pytest.mark.parametrize("conv", [False, True], ids=["linear", "conv1x1"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}to{s[1]}")
@pytest.mark.parametrize("method", METHODS)
def test_exact_no_op_at_init(rect, method, shape, conv):
    layer = make(rect, method, shape, conv)
    x = inputs(shape, conv)
    assert torch.equal(layer(x), layer.base_layer(x))
    assert torch.count_nonzero(layer.delta_weight()) == 0
    # and it can learn: some adapter tensor gets a gradient
    layer(x).square().sum().backward()
    grads = [p.grad for p in layer.adapter_parameters().values() if p.grad is not None]
    assert any(torch.count_nonzero(g) > 0 for g in grads)


@pytest.mark.parametrize("shape", [(4, 12), (12, 3)], ids=["expand", "project"])
def test_narrow_unmerge_restores_the_base(rect, shape):
    layer = make(rect, "narrow", shape, conv=False)
    randomise(layer)
    with torch.no_grad():
        layer.lora_lambda.mul_(0.1)  # keep I + S well conditioned
    w0 = layer.base_layer.weight.detach().clone()
    x = inputs(shape, conv=False)
    before = layer(x)
    layer.merge()
    assert torch.allclose(layer(x), before, rtol=1e-10, atol=1e-10)
    layer.unmerge()
    assert torch.allclose(layer.base_layer.weight, w0, rtol=1e-10, atol=1e-10)


def test_budget_ranks_are_the_closest(rect):
    shapes = [(16, 96), (96, 24), (192, 1152), (1152, 192)]
    target = rect.model_count(shapes, "lora", 4)
    for method, (r, rem) in rect.budget_ranks(shapes, 4).items():
        here = abs(rect.model_count(shapes, method, r, rem) - target)
        for other in (r - 1, r + 1):
            if other >= 1:
                assert here <= abs(rect.model_count(shapes, method, other, rem) - target)


def test_unknown_method_is_refused(rect):
    with pytest.raises(ValueError, match="unknown method"):
        rect.make_layer("nope", nn.Linear(4, 8), r=2)


def test_merge_keeps_every_group_and_a_later_file_replaces_a_group(rect, tmp_path):
    """``--merge``: groups (task, method, steps) from several files in one table; a group
    measured again in a later file replaces the earlier one's runs, and the result is complete
    once every method has every step count."""
    import json

    def run(method, steps, seed, acc):
        return {"task": "cnn", "method": method, "r": 4, "remainder_r": 0, "steps": steps, "lr": 1e-3, "seed": seed,
                "val_accuracy": acc, "test_accuracy": acc, "diverged": False, "adapter_params": 10,
                "trainable_params": 20, "layers": 1, "loss_curve": [], "group_train_s": 1.0, "group_runs": 2}

    first = {"meta": {"command": "a", "complete": False},
             "runs": [run("lora", 60, s, 0.5) for s in (0, 1)] + [run("symlora", 60, s, 0.4) for s in (0, 1)]}
    second = {"meta": {"command": "b", "complete": True},
              "runs": [run("symlora", 60, s, 0.6) for s in (0, 1)] + [run(m, 180, s, 0.7) for m in ("lora", "symlora")
                                                                      for s in (0, 1)]}
    paths = []
    for name, part in (("a.json", first), ("b.json", second)):
        paths.append(str(tmp_path / name))
        (tmp_path / name).write_text(json.dumps(part))
    assert rect.main(["--merge", *paths, "--out", str(tmp_path / "m.json")]) == 0
    merged = json.loads((tmp_path / "m.json").read_text())
    means = {(s["method"], s["steps"]): s["test_mean"] for s in merged["summary"]}
    assert means == {("lora", 60): 0.5, ("symlora", 60): 0.6, ("lora", 180): 0.7, ("symlora", 180): 0.7}
    assert len(merged["runs"]) == 8 and merged["meta"]["complete"] is True
    assert [m["command"] for m in merged["meta"]["parts"]] == ["a", "b"]
