"""Presets: each names a real model and real data that fit together, hub presets say they
need the internet, and the default classroom preset visibly learns within seconds."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import symlora
from symlora.lab.data import DATASETS, load_dataset
from symlora.lab.presets import DEFAULT_PRESET, PRESETS, Preset, get_preset, list_presets
from symlora.lab.zoo import MODELS, load_model


def test_presets_name_registered_models_and_data_of_the_same_task():
    for p in list_presets():
        model, data = MODELS[p.model], DATASETS[p.data.partition(":")[0]]
        assert p.task == model.task == data.task, p.name
        assert p.needs_internet == (model.needs_internet or data.needs_internet), p.name
        assert p.method in ("lora", "symlora") and p.steps > 0 and p.eval_every <= p.steps
        assert p.description


def test_required_presets_exist_and_digits_is_the_default():
    assert DEFAULT_PRESET == "digits"
    assert get_preset("digits").model == "fmnist-vit" and get_preset("digits").data == "mnist-5k"
    assert get_preset("fortunes").model == "smollm2-135m" and get_preset("fortunes").data.startswith("fortunes:")
    assert any(p.needs_internet for p in list_presets()) and not get_preset("digits").needs_internet
    names = [p.name for p in list_presets()]
    assert len(names) == len(set(names)) == len(PRESETS)
    assert [p.needs_internet for p in list_presets()] == sorted(p.needs_internet for p in list_presets())


def test_unknown_preset_lists_the_names():
    with pytest.raises(ValueError, match="digits.*fortunes"):
        get_preset("nope")


def test_presets_serialise_to_json_with_the_cli_fields():
    for p in list_presets():
        d = json.loads(json.dumps(p.to_dict()))
        assert {"name", "task", "model", "data", "needs_internet", "description"} <= set(d)
        assert Preset(**{**d, "target_modules": tuple(d["target_modules"]) if d["target_modules"] else None}) == p
    assert get_preset("digits").replace(method="lora").method == "lora"


def test_offline_vision_presets_resolve_on_their_models():
    p = get_preset("digits")
    vm = load_model(p.model)
    vm.reset_head(load_dataset(p.data).classes, seed=p.seed)
    for method in ("lora", "symlora"):
        model = load_model(p.model).model
        symlora.inject(model, symlora.AdapterConfig(method=method, r=p.r, lora_alpha=p.lora_alpha,
                                                    target_modules=list(p.target_modules), modules_to_save=["head"]))


def test_digits_preset_learns_digits_within_a_few_dozen_steps():
    """A quarter of the preset's steps with its settings lifts a fresh head from chance
    (10 %) to well above it — the classroom's "it learns" moment."""
    torch.manual_seed(0)
    p = get_preset("digits")
    data = load_dataset(p.data, seed=p.seed)
    vm = load_model(p.model)
    vm.reset_head(data.classes, seed=p.seed)
    symlora.inject(vm.model, symlora.AdapterConfig(method=p.method, r=p.r, lora_alpha=p.lora_alpha,
                                                   target_modules=list(p.target_modules), modules_to_save=[vm.head_name]))
    x, y = vm.preprocess(data.train.images), data.train.labels
    opt = torch.optim.AdamW([q for q in vm.model.parameters() if q.requires_grad], lr=p.lr)
    g = torch.Generator().manual_seed(p.seed)
    vm.model.train()
    for _ in range(p.steps // 4):
        idx = torch.randint(0, len(y), (p.batch_size,), generator=g)
        loss = F.cross_entropy(vm.model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    vm.model.eval()
    with torch.no_grad():
        acc = (vm.model(vm.preprocess(data.test.images[:500])).argmax(-1) == data.test.labels[:500]).float().mean()
    assert acc > 0.4


def test_each_method_trains_at_its_own_tuned_rate():
    """The fortunes preset carries LoRA's and SymLoRA's own learning rates (chosen on
    validation data); a run that leaves lr unset gets its method's, a set lr wins."""
    from symlora.lab.presets import get_preset
    from symlora.lab.train import RunConfig

    preset = get_preset("fortunes")
    assert preset.lr_for("symlora") == preset.lr and preset.lr_for("lora") != preset.lr
    assert RunConfig(preset="fortunes", method="lora").resolved().lr == preset.lr_for("lora")
    assert RunConfig(preset="fortunes", method="symlora").resolved().lr == preset.lr_for("symlora")
    assert RunConfig(preset="fortunes", method="lora", lr=1e-3).resolved().lr == 1e-3
    assert preset.to_dict()["method_lr"] == {"lora": preset.lr_for("lora")}


def test_compare_uses_both_tuned_rates_unless_the_user_typed_one():
    from app.settings import Settings
    from app.tab_compare import tuned_rates
    from symlora.lab.presets import get_preset

    preset = get_preset("fortunes")
    shown = Settings.from_preset(preset)
    lora, sym, note = tuned_rates(shown, shown.replace(method="lora"), shown.replace(method="symlora"))
    assert (lora.lr, sym.lr) == (preset.lr_for("lora"), preset.lr_for("symlora")) and "own tuned" in note
    typed = shown.replace(lr=3e-3)
    lora, sym, note = tuned_rates(typed, typed.replace(method="lora"), typed.replace(method="symlora"))
    assert lora.lr == sym.lr == 3e-3 and note == ""
