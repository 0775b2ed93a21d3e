"""A few optimizer steps on real architectures (tiny timm ViT, tiny GQA Llama) with both
methods: the loss goes down, only adapters (+ modules_to_save) move, the base stays
bit-identical."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import symlora
from symlora import AdapterConfig

STEPS = 10


def train(model, loss_fn):
    """Adam on the trainable parameters over one fixed batch; returns the losses."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-2)
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = loss_fn(model)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        losses.append(loss_fn(model).item())
    return losses


def check_only_adapters_moved(model, before, saved_prefixes=()):
    adapter_names = {f"{n}.{local}" for n, layer in symlora.adapter_layers(model) for local in layer.adapter_parameters()}
    assert adapter_names
    for name, p in model.named_parameters():
        if name in adapter_names or name.startswith(saved_prefixes):
            assert p.requires_grad, name
            assert not torch.equal(p.detach(), before[name]), f"{name} did not train"
        else:
            assert not p.requires_grad, name
            assert torch.equal(p.detach(), before[name]), f"frozen {name} changed"


@pytest.mark.parametrize("method", ["symlora", "lora"])
def test_vit_trains(make_vit, vit_batch, method):
    images, labels = vit_batch
    config = AdapterConfig(method=method, r=2, target_modules=["qkv", "proj", "fc1", "fc2"], modules_to_save=["head"])
    model = symlora.inject(make_vit(), config)
    kinds = {name.split(".")[-1]: getattr(layer, "layout", "lora") for name, layer in symlora.adapter_layers(model)}
    if method == "symlora":
        assert kinds == {"qkv": "stacked", "proj": "square", "fc1": "stacked", "fc2": "side"}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    losses = train(model, lambda m: F.cross_entropy(m(images), labels))
    assert losses[-1] < losses[0] - 0.05, losses
    check_only_adapters_moved(model, before, saved_prefixes=("head.",))


@pytest.mark.parametrize("method", ["symlora", "lora"])
def test_llama_gqa_trains(make_llama, llama_batch, method):
    config = AdapterConfig(method=method, r=2, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    model = symlora.inject(make_llama(), config)
    if method == "symlora":
        layouts = {n.split(".")[-1]: (l.layout, l.k) for n, l in symlora.adapter_layers(model)}
        assert layouts == {"q_proj": ("square", 1), "o_proj": ("square", 1), "k_proj": ("side", 2), "v_proj": ("side", 2)}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    losses = train(model, lambda m: m(llama_batch, labels=llama_batch).loss)
    assert losses[-1] < losses[0] - 0.05, losses
    check_only_adapters_moved(model, before)
