"""Injection on whole models: what gets wrapped, what is frozen, counts, merge/unmerge,
disable_adapters, target matching (as PEFT does it) and the errors users will hit."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from torch import nn

import symlora
from symlora import AdapterConfig
from numerics import assert_same_up_to_rounding, assert_within, rounding_noise, sum_bound

VIT_TARGETS = ["qkv", "proj", "fc1", "fc2"]
LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def adapted(model):
    return {name: layer for name, layer in symlora.adapter_layers(model)}


def peft_targets(model, target_modules):
    """The module paths real PEFT wraps for the same ``target_modules``."""
    import peft

    wrapped = peft.get_peft_model(copy.deepcopy(model), peft.LoraConfig(r=2, target_modules=target_modules))
    prefix = "base_model.model."
    return sorted(n[len(prefix):] for n, m in wrapped.named_modules() if isinstance(m, peft.tuners.lora.LoraLayer))


# -- what inject does --------------------------------------------------------------------


def test_vit_symlora_layouts_and_frozen_base(make_vit):
    model = symlora.inject(make_vit(), AdapterConfig(method="symlora", r=2, target_modules=VIT_TARGETS))
    layers = adapted(model)
    assert len(layers) == 2 * 4  # 2 blocks × (qkv, proj, fc1, fc2); patch_embed.proj is a 8×8 conv
    expected = {"attn.qkv": ("stacked", 3, 16), "attn.proj": ("square", 1, 16),
                "mlp.fc1": ("stacked", 4, 16), "mlp.fc2": ("side", 4, 16)}
    for name, layer in layers.items():
        suffix = name.split(".", 2)[2]
        assert (layer.layout, layer.k, layer.n) == expected[suffix], name
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{n}.{local}" for n, l in layers.items() for local in ("lora_Q", "lora_lambda")}
    assert symlora.get_config(model).r == 2


@pytest.mark.parametrize("method", ["symlora", "lora"])
def test_vit_param_count_equals_formula(make_vit, method):
    r, d = 4, 16
    model = symlora.inject(make_vit(), AdapterConfig(method=method, r=r, target_modules=VIT_TARGETS))
    total_before = sum(p.numel() for p in make_vit().parameters())
    shapes = [(d, 3 * d), (d, d), (d, 4 * d), (4 * d, d)]  # qkv, proj, fc1, fc2 as (in, out)
    if method == "lora":
        per_block = sum(r * (i + o) for i, o in shapes)
    else:
        per_block = 3 * (d * r + r) + (d * r + r) + 4 * (d * r + r) + 4 * (d * r + r)
    count = symlora.count_parameters(model)
    assert count.trainable == 2 * per_block
    assert count.total == total_before + count.trainable
    assert sum(row.trainable for row in count.rows) == count.trainable
    assert re.fullmatch(r"trainable params: [\d,]+ \|\| all params: [\d,]+ \|\| trainable%: \d+\.\d{4}", str(count))
    assert f"{count.trainable:,}" in str(count)


def test_modules_to_save_are_trainable_and_counted(make_vit):
    config = AdapterConfig(method="symlora", r=2, target_modules=["proj"], modules_to_save=["head"])
    model = symlora.inject(make_vit(), config)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"head.weight", "head.bias"} <= trainable
    assert all(n.startswith("head.") or ".lora_" in n for n in trainable)
    rows = {row.name: row for row in symlora.count_parameters(model).rows}
    assert rows["head"].kind == "saved" and rows["head"].trainable == 16 * 5 + 5


@pytest.mark.parametrize("method", ["symlora", "lora"])
def test_init_outputs_equal_base_exactly(make_vit, make_llama, vit_batch, llama_batch, method):
    images, _ = vit_batch
    base, model = make_vit(), make_vit()
    symlora.inject(model, AdapterConfig(method=method, r=2, target_modules=VIT_TARGETS))
    with torch.no_grad():
        assert torch.equal(model(images), base(images))

    base, model = make_llama(), make_llama()
    symlora.inject(model, AdapterConfig(method=method, r=2, target_modules=LLAMA_TARGETS + ["gate_proj", "down_proj"]))
    with torch.no_grad():
        assert torch.equal(model(llama_batch).logits, base(llama_batch).logits)


def test_inject_twice_is_refused(make_vit):
    model = symlora.inject(make_vit(), AdapterConfig(r=2, target_modules=["proj"]))
    with pytest.raises(ValueError, match="already"):
        symlora.inject(model, AdapterConfig(r=2, target_modules=["fc1"]))


# -- merge, unmerge, disable ---------------------------------------------------------------


@pytest.mark.parametrize("method", ["symlora", "lora"])
def test_merge_unmerge_disable(make_vit, vit_batch, randomize, method):
    """merge / disable / unmerge change outputs by rounding only, and unmerge restores W to
    within the rounding of the additions and subtractions it went through (see
    ``AdapterLayer.unmerge``); bounds from tests/numerics.py, not a fixed atol."""
    images, _ = vit_batch
    base = make_vit()
    model = symlora.inject(make_vit(), AdapterConfig(method=method, r=2, target_modules=VIT_TARGETS))
    randomize(model)
    weights = {n: l.base_layer.weight.detach().clone() for n, l in symlora.adapter_layers(model)}
    deltas = {n: l.delta_weight().detach().clone() for n, l in symlora.adapter_layers(model)}
    noise = rounding_noise(model, lambda m, dtype: m(images.to(dtype)))
    with torch.no_grad():
        base_out = base(images)
        unmerged = model(images)
        assert (unmerged - base_out).abs().max() > 1e3 * noise  # the adapters do something

        with symlora.disable_adapters(model):
            assert torch.equal(model(images), base_out)  # the very same operations on the same weights
        assert torch.equal(model(images), unmerged)

        symlora.merge(model)
        assert all(l.merged for _, l in symlora.adapter_layers(model))
        merged = model(images)
        assert_same_up_to_rounding(merged, unmerged, noise, "merged vs unmerged")
        symlora.merge(model)  # idempotent: ΔW is not added twice
        assert_same_up_to_rounding(model(images), unmerged, noise, "merged twice")

        with symlora.disable_adapters(model):  # merged weights are taken out meanwhile
            assert_same_up_to_rounding(model(images), base_out, noise, "disabled while merged")
        assert_same_up_to_rounding(model(images), merged, noise, "merged again after disable")

        symlora.unmerge(model)
    for name, layer in symlora.adapter_layers(model):
        assert not layer.merged
        # W went through +ΔW, −ΔW, +ΔW, −ΔW: four roundings of terms of size |W| + |ΔW|.
        bound = sum_bound(weights[name], deltas[name], roundings=4)
        assert_within(layer.base_layer.weight.detach(), weights[name], bound, f"{name} after unmerge")
    with torch.no_grad():
        assert_same_up_to_rounding(model(images), unmerged, noise, "unmerged again")


def test_disable_adapters_keeps_modules_to_save(make_vit, vit_batch, randomize):
    images, _ = vit_batch
    model = symlora.inject(make_vit(), AdapterConfig(r=2, target_modules=["proj"], modules_to_save=["head"]))
    randomize(model)
    base_with_new_head = make_vit()
    with torch.no_grad():
        model.head.weight.add_(1.0)
        base_with_new_head.head.load_state_dict(model.head.state_dict())
        with symlora.disable_adapters(model):
            assert torch.equal(model(images), base_with_new_head(images))  # ΔW off, trained head on


# -- target matching ------------------------------------------------------------------


def test_suffix_list_matches_whole_name_parts(make_vit):
    model = symlora.inject(make_vit(), AdapterConfig(r=2, target_modules=["fc1", "attn.proj"]))
    assert sorted(adapted(model)) == ["blocks.0.attn.proj", "blocks.0.mlp.fc1", "blocks.1.attn.proj", "blocks.1.mlp.fc1"]
    with pytest.raises(ValueError, match="not found"):
        symlora.inject(make_vit(), AdapterConfig(r=2, target_modules=["c1"]))  # not a whole name part


@pytest.mark.parametrize("spec", [r".*\.mlp\.fc\d", r"blocks\.1\..*\.(qkv|fc1)", ["qkv", "fc2"]])
def test_targets_match_peft(make_vit, spec):
    model = symlora.inject(make_vit(), AdapterConfig(method="lora", r=2, target_modules=spec))
    assert sorted(adapted(model)) == peft_targets(make_vit(), spec)


def test_regex_is_a_full_match(make_vit):
    with pytest.raises(ValueError, match="not found"):
        symlora.inject(make_vit(), AdapterConfig(r=2, target_modules=r"mlp\.fc\d"))


@pytest.mark.parametrize("method", ["symlora", "lora"])
def test_all_linear_skips_the_head_on_vit(make_vit, method):
    model = symlora.inject(make_vit(), AdapterConfig(method=method, r=2, target_modules="all-linear"))
    linear = [n for n, m in make_vit().named_modules() if isinstance(m, nn.Linear)]
    assert sorted(adapted(model)) == sorted(n for n in linear if n != "head")


def test_all_linear_matches_peft_on_llama(make_llama):
    model = symlora.inject(make_llama(), AdapterConfig(method="lora", r=2, target_modules="all-linear"))
    names = sorted(adapted(model))
    assert "lm_head" not in names and len(names) == 2 * 7
    assert names == peft_targets(make_llama(), "all-linear")


def test_all_linear_symlora_skips_shapes_without_square_blocks():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 6), nn.Linear(6, 3))
    symlora.inject(model, AdapterConfig(method="symlora", r=2, target_modules="all-linear"))
    assert sorted(adapted(model)) == ["0", "3"]  # 8→6 has no square blocks; 6→3 = 2 side blocks


def test_eligible_modules_per_method():
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(6, 4), nn.Conv2d(4, 8, 1), nn.Conv2d(4, 4, 3))
    assert symlora.eligible_modules(model, "lora") == ["0", "1", "2"]
    assert symlora.eligible_modules(model, "symlora") == ["0", "2"]


# -- errors -------------------------------------------------------------------------


def test_no_match_lists_eligible_modules(make_vit):
    with pytest.raises(ValueError) as err:
        symlora.inject(make_vit(), AdapterConfig(method="symlora", r=2, target_modules=["q_proj"]))
    message = str(err.value)
    assert "q_proj" in message
    for name in ("blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.1.mlp.fc1", "blocks.1.mlp.fc2"):
        assert name in message


def test_incompatible_shape_names_layer_and_shape():
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 4))
    with pytest.raises(ValueError) as err:
        symlora.inject(model, AdapterConfig(method="symlora", r=2, target_modules=["2"]))
    assert "'2'" in str(err.value) and "in=6, out=4" in str(err.value)
    assert all(p.requires_grad for p in model.parameters())  # refused before touching the model
    symlora.inject(model, AdapterConfig(method="lora", r=2, target_modules=["2"]))  # LoRA takes any shape


def test_missing_target_modules_and_missing_modules_to_save(make_vit):
    with pytest.raises(ValueError, match="target_modules"):
        symlora.inject(make_vit(), AdapterConfig(r=2))
    model = make_vit()
    with pytest.raises(ValueError, match="modules_to_save"):
        symlora.inject(model, AdapterConfig(r=2, target_modules=["proj"], modules_to_save=["classifier"]))
    assert not list(symlora.adapter_layers(model))  # untouched: fixing the typo and retrying works
    assert all(p.requires_grad for p in model.parameters())
    symlora.inject(model, AdapterConfig(r=2, target_modules=["proj"], modules_to_save=["head"]))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"r": 0},
        {"r": -2},
        {"r": 2.5},
        {"method": "dora"},
        {"lora_alpha": 0},
        {"lora_dropout": 1.0},
        {"lora_dropout": -0.1},
        {"symlora_init": "zeros"},
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
def test_bad_config_values_raise(kwargs):
    with pytest.raises(ValueError):
        AdapterConfig(**kwargs)


def test_config_json_round_trip(tmp_path):
    config = AdapterConfig(method="lora", r=4, lora_alpha=8, target_modules=r".*proj", use_rslora=True,
                           modules_to_save=("head",))
    config.save(tmp_path / "c.json")
    assert AdapterConfig.load(tmp_path / "c.json") == config
