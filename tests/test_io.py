"""Saving, loading (safetensors only, never unpickling) and exporting to real PEFT."""

from __future__ import annotations

import json
import os
import warnings

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import symlora
from symlora import AdapterConfig
from numerics import assert_same_up_to_rounding, assert_within, rounding_noise, sum_bound

VIT_TARGETS = ["qkv", "proj", "fc1", "fc2"]
LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
PREFIX = "base_model.model."


@torch.no_grad()
def retrain_head(model, seed=5):
    g = torch.Generator().manual_seed(seed)
    model.head.weight.copy_(torch.randn(model.head.weight.shape, generator=g))


def file_keys(directory):
    return load_file(str(directory / "adapter_model.safetensors"))


# -- save / load ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["symlora", "lora"])
def test_save_load_vit_reproduces_outputs(tmp_path, make_vit, vit_batch, randomize, method):
    images, _ = vit_batch
    config = AdapterConfig(method=method, r=2, lora_alpha=4, target_modules=VIT_TARGETS, modules_to_save=["head"])
    model = symlora.inject(make_vit(), config)
    randomize(model)
    retrain_head(model)
    symlora.save_adapter(model, tmp_path / "adapter")

    assert sorted(os.listdir(tmp_path / "adapter")) == ["adapter_config.json", "adapter_model.safetensors"]
    saved_config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved_config["method"] == method and saved_config["r"] == 2 and saved_config["lora_alpha"] == 4
    assert saved_config["peft_type"] == ("LORA" if method == "lora" else "SYMLORA")
    keys = file_keys(tmp_path / "adapter")
    assert all(k.startswith(PREFIX) for k in keys)
    assert {PREFIX + "head.weight", PREFIX + "head.bias"} <= set(keys)
    assert not any("base_layer" in k for k in keys)  # the frozen base is not copied
    if method == "lora":
        assert PREFIX + "blocks.0.attn.qkv.lora_A.weight" in keys
        assert keys[PREFIX + "blocks.0.attn.qkv.lora_B.weight"].shape == (48, 2)
    else:
        assert keys[PREFIX + "blocks.0.attn.qkv.lora_Q"].shape == (16, 3 * 2)
        assert keys[PREFIX + "blocks.1.mlp.fc2.lora_lambda"].shape == (4 * 2,)

    fresh = symlora.load_adapter(make_vit(seed=0), tmp_path / "adapter")
    with torch.no_grad():
        assert torch.equal(fresh(images), model(images))
    assert symlora.get_config(fresh) == config
    assert {n for n, p in fresh.named_parameters() if p.requires_grad} == {
        n for n, p in model.named_parameters() if p.requires_grad
    }


@pytest.mark.parametrize("method", ["symlora", "lora"])
def test_save_load_llama_reproduces_outputs(tmp_path, make_llama, llama_batch, randomize, method):
    model = symlora.inject(make_llama(), AdapterConfig(method=method, r=2, target_modules=LLAMA_TARGETS))
    randomize(model)
    symlora.save_adapter(model, tmp_path)
    fresh = symlora.load_adapter(make_llama(), tmp_path)
    with torch.no_grad():
        assert torch.equal(fresh(llama_batch).logits, model(llama_batch).logits)


def test_load_into_a_model_that_does_not_fit(tmp_path):
    model = symlora.inject(nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8)), AdapterConfig(r=2, target_modules=["0", "1"]))
    symlora.save_adapter(model, tmp_path)
    with pytest.raises(ValueError, match="unexpected"):
        symlora.load_adapter(nn.Sequential(nn.Linear(8, 8)), tmp_path)
    with pytest.raises(ValueError, match="shape"):
        symlora.load_adapter(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)), tmp_path)
    with pytest.raises(FileNotFoundError):
        symlora.load_adapter(nn.Sequential(nn.Linear(8, 8)), tmp_path / "nowhere")


# -- pickles are refused, never unpickled ---------------------------------------------


class _Payload:
    """Unpickling this object creates a directory: proof that unpickling happened."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (os.mkdir, (self.sentinel,))


def _pickle(path, sentinel):
    torch.save({"base_model.model.0.lora_A.weight": _Payload(sentinel)}, path)


def test_pickle_payload_is_live(tmp_path):
    """Sanity check of the test itself: a plain torch.load would run the payload."""
    _pickle(tmp_path / "p.bin", tmp_path / "ran")
    torch.load(tmp_path / "p.bin", weights_only=False)
    assert (tmp_path / "ran").exists()


@pytest.mark.parametrize("layout", ["bin_only", "config_and_bin", "pickle_named_safetensors", "file_path"])
def test_loading_a_pickle_is_refused_without_unpickling(tmp_path, layout):
    sentinel = tmp_path / "payload_ran"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    if layout != "bin_only":
        AdapterConfig(r=2, target_modules=["0"]).save(adapter / "adapter_config.json")
    name = "adapter_model.safetensors" if layout == "pickle_named_safetensors" else "adapter_model.bin"
    _pickle(adapter / name, sentinel)
    target = adapter / name if layout == "file_path" else adapter

    model = nn.Sequential(nn.Linear(8, 8))
    with pytest.raises(ValueError):
        symlora.load_adapter(model, target)
    assert not sentinel.exists()
    assert not list(symlora.adapter_layers(model))  # refused before the model was touched


# -- export to a plain PEFT LoRA adapter -----------------------------------------------


def _peft_load(base, directory):
    """Load with real PEFT; our config must not make PEFT complain about unknown keys."""
    from peft import PeftModel

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft_model = PeftModel.from_pretrained(base, str(directory)).eval()
    assert not [w for w in caught if "Unexpected keyword" in str(w.message)]
    return peft_model


@pytest.mark.parametrize(
    "config",
    [
        AdapterConfig(method="symlora", r=2, lora_alpha=3, target_modules=VIT_TARGETS, modules_to_save=["head"]),
        AdapterConfig(method="symlora", r=3, use_rslora=True, target_modules=r".*\.(qkv|fc2)"),
        AdapterConfig(method="lora", r=2, lora_alpha=8, use_rslora=True, target_modules=VIT_TARGETS,
                      modules_to_save=["head"]),
    ],
    ids=["symlora+head", "symlora-rslora", "lora-rslora+head"],
)
def test_export_peft_vit_round_trip(tmp_path, make_vit, vit_batch, randomize, config):
    images, _ = vit_batch
    model = symlora.inject(make_vit(), config)
    randomize(model)
    if config.modules_to_save:
        retrain_head(model)
    symlora.export_peft(model, tmp_path)

    peft_config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert peft_config["peft_type"] == "LORA"
    keys = file_keys(tmp_path)
    r = config.r
    if config.method == "symlora":  # block-symmetric layers become rank k·r LoRAs
        assert keys[PREFIX + "blocks.0.attn.qkv.lora_A.weight"].shape == (3 * r, 16)
        assert keys[PREFIX + "blocks.0.attn.qkv.lora_B.weight"].shape == (48, 3 * r)
        assert keys[PREFIX + "blocks.1.mlp.fc2.lora_A.weight"].shape == (4 * r, 64)
        assert keys[PREFIX + "blocks.1.mlp.fc2.lora_B.weight"].shape == (16, 4 * r)

    peft_model = _peft_load(make_vit(), tmp_path)
    noise = rounding_noise(model, lambda m, dtype: m(images.to(dtype)))
    with torch.no_grad():
        ours, theirs, base = model(images), peft_model(images), make_vit()(images)
    assert (ours - base).abs().max() > 1e3 * noise  # the comparison is not trivially base == base
    assert_same_up_to_rounding(theirs, ours, noise, "PEFT vs ours")


@pytest.mark.parametrize("method", ["symlora", "lora"])
def test_export_peft_llama_gqa_round_trip(tmp_path, make_llama, llama_batch, randomize, method):
    model = symlora.inject(make_llama(), AdapterConfig(method=method, r=2, target_modules=LLAMA_TARGETS))
    randomize(model)
    if method == "symlora":
        layer = model.get_submodule("model.layers.0.self_attn.k_proj")
        assert (layer.layout, layer.k) == ("side", 2)  # GQA: 32 → 16
    symlora.export_peft(model, tmp_path)
    peft_model = _peft_load(make_llama(), tmp_path)
    noise = rounding_noise(model, lambda m, dtype: m(llama_batch).logits)
    with torch.no_grad():
        ours, theirs = model(llama_batch).logits, peft_model(input_ids=llama_batch).logits
        base = make_llama()(llama_batch).logits
    assert (ours - base).abs().max() > 1e3 * noise
    assert_same_up_to_rounding(theirs, ours, noise, "PEFT vs ours")


def test_export_peft_conv1x1_round_trip(tmp_path, randomize):
    def cnn():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU(), nn.Conv2d(4, 8, 1), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()

    model = symlora.inject(cnn(), AdapterConfig(method="symlora", r=2, target_modules=["0", "2", "4"]))
    randomize(model)
    symlora.export_peft(model, tmp_path)
    x = torch.randn(2, 4, 3, 3)
    peft_model = _peft_load(cnn(), tmp_path)
    noise = rounding_noise(model, lambda m, dtype: m(x.to(dtype)))
    with torch.no_grad():
        assert_same_up_to_rounding(peft_model(x), model(x), noise, "PEFT vs ours")


def test_lora_factors_reproduce_delta_weight(make_vit, randomize):
    model = symlora.inject(make_vit(), AdapterConfig(method="symlora", r=2, target_modules=VIT_TARGETS))
    randomize(model)
    for name, layer in symlora.adapter_layers(model):
        a, b = symlora.lora_factors(layer)
        # Two float32 sums of the same k·r products: each within k·r roundings of |B|·|A|.
        bound = sum_bound(b.abs() @ a.abs(), roundings=2 * a.shape[0])
        assert_within(b @ a, layer.delta_weight().detach(), bound, name)


# -- exports that explain themselves ------------------------------------------------------
@pytest.mark.parametrize("fmt", ["peft", "symlora"])
def test_export_carries_a_model_card_whose_snippet_reproduces_the_outputs(tmp_path, randomize, fmt):
    """The download's README names the base (also in adapter_config.json), its
    preprocessing and labels, and its loading snippet, run as written in a fresh
    process, gives the tuned model's prediction."""
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    from symlora.io import export_bundle
    from symlora.lab.zoo import load_model

    bundle = load_model("fmnist-vit")
    bundle.reset_head(["circle", "square", "triangle"], seed=1)
    symlora.inject(bundle.model, AdapterConfig(method="symlora", r=2, lora_alpha=4,
                                               target_modules=["attn.qkv", "attn.proj"], modules_to_save=["head"]))
    randomize(bundle.model)
    bundle.model.eval()
    out = export_bundle(bundle, tmp_path / "export", fmt=fmt,
                        facts={"data": "shapes.zip", "metric_name": "accuracy", "metric_before": 0.33,
                               "metric_after": 0.9, "steps": 20, "seed": 0})
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "fmnist-vit"
    card = (out / "README.md").read_text()
    for needed in ('symlora.lab.zoo.load_model("fmnist-vit")', "| 2 | triangle |", "normalised with mean",
                   "grayscale", "33.0% before → **90.0%**", "shapes.zip"):
        assert needed in card, needed
    pixels = np.zeros((28, 28, 3), np.uint8)
    pixels[6:22, 6:22] = 255
    Image.fromarray(pixels).save(out / "picture.png")
    with torch.no_grad():
        probs = bundle.model(bundle.preprocess(torch.from_numpy(pixels)[None])).softmax(-1)[0]
    snippet = card.split("## Load it")[1].split("```python")[1].split("```")[0]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    done = subprocess.run([sys.executable, "-c", snippet], cwd=out, capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    label, prob = done.stdout.split()[-2:]
    assert label == bundle.labels[int(probs.argmax())]
    assert abs(float(prob) - float(probs.max())) < 1e-4
