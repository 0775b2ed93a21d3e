"""Presets: each names a real model and real data that fit together, hub presets say they
need the internet, and the default classroom preset visibly learns within seconds."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

import symlora
from symlora.lab.data import DATASETS, load_dataset
from symlora.lab.presets import DEFAULT_PRESET, PRESETS, Preset, get_preset, list_presets
from symlora.lab.runconfig import SETTINGS, RunConfig
from symlora.lab.zoo import MODELS, load_model


def test_presets_name_registered_models_and_data_of_the_same_task():
    for p in list_presets():
        model, data = MODELS[p.model], DATASETS[p.data.partition(":")[0]]
        assert p.task == model.task == data.task, p.name
        assert p.needs_internet == (model.needs_internet or data.needs_internet), p.name
        c = p.config
        assert c.method in ("lora", "symlora") and c.steps > 0 and c.eval_every <= c.steps
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
        assert RunConfig.build({k: v for k, v in d.items() if k in SETTINGS}) == p.config  # the same run
    lora = RunConfig.from_preset("digits", method="lora")
    assert lora.method == lora.adapter.method == "lora" and lora.adapter.r == get_preset("digits").config.adapter.r


def test_a_preset_names_its_settings_as_the_run_and_the_adapter_do():
    """A preset is declared once, with the names RunConfig and AdapterConfig use; a typo or a
    bad value fails where the preset is written, not when a class presses Start."""
    with pytest.raises(TypeError, match="unknown setting 'rank'"):
        Preset("x", "vision", "fmnist-vit", "mnist-5k", "typo", rank=4)
    with pytest.raises(ValueError, match="lora_dropout"):
        Preset("x", "vision", "fmnist-vit", "mnist-5k", "bad value", lora_dropout=2.0)
    p = Preset("x", "vision", "fmnist-vit", "mnist-5k", "fine", r=4, lora_dropout=0.1, steps=40)
    assert (p.config.adapter.r, p.config.adapter.lora_dropout, p.config.steps, p.config.eval_every) == (4, 0.1, 40, 10)


def test_offline_vision_presets_resolve_on_their_models():
    p = get_preset("digits")
    vm = load_model(p.model)
    vm.reset_head(load_dataset(p.data).classes, seed=p.config.seed)
    for method in ("lora", "symlora"):
        model = load_model(p.model).model
        symlora.inject(model, RunConfig.from_preset(p.name, method=method).adapter)


def test_digits_preset_learns_digits_within_a_few_dozen_steps():
    """A quarter of the preset's steps with its settings lifts a fresh head from chance
    (10 %) to well above it — the classroom's "it learns" moment."""
    torch.manual_seed(0)
    p = get_preset("digits").config
    data = load_dataset(p.data, seed=p.seed)
    vm = load_model(p.model)
    vm.reset_head(data.classes, seed=p.seed)
    symlora.inject(vm.model, replace(p.adapter, modules_to_save=[vm.head_name]))
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
    from symlora.lab.runconfig import RunConfig

    preset = get_preset("fortunes")
    assert preset.lr_for("symlora") == preset.config.lr and preset.lr_for("lora") != preset.config.lr
    assert RunConfig.from_preset("fortunes", method="lora").lr == preset.lr_for("lora")
    assert RunConfig.from_preset("fortunes", method="symlora").lr == preset.lr_for("symlora")
    assert RunConfig.from_preset("fortunes", method="lora", lr=1e-3).lr == 1e-3
    assert preset.to_dict()["method_lr"] == {"lora": preset.lr_for("lora")}


def test_compare_uses_both_tuned_rates_unless_the_user_typed_one():
    from app.tab_compare import tuned_rates
    from symlora.lab.presets import get_preset

    preset = get_preset("fortunes")
    shown = preset.config
    lora, sym, note = tuned_rates(shown, shown.replace(method="lora"), shown.replace(method="symlora"))
    assert (lora.lr, sym.lr) == (preset.lr_for("lora"), preset.lr_for("symlora")) and "own tuned" in note
    typed = shown.replace(lr=3e-3)
    lora, sym, note = tuned_rates(typed, typed.replace(method="lora"), typed.replace(method="symlora"))
    assert lora.lr == sym.lr == 3e-3 and note == ""


@pytest.mark.slow
def test_train_tab_method_switch_follows_the_presets_rate_not_a_typed_one():
    """On a preset with per-method rates (fortunes), switching the method on the Train tab
    moves the learning rate to that method's best one — unless the user typed their own."""
    from app.ui import build_demo

    demo = build_demo()
    on_method = next(f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "on_method")
    preset = get_preset("fortunes")
    assert preset.lr_for("lora") != preset.lr_for("symlora")
    moved = on_method(preset.model, "lora", [], "fortunes", preset.lr_for("symlora"))[-1]
    assert moved["value"] == preset.lr_for("lora")
    kept = on_method(preset.model, "lora", [], "fortunes", 3.3e-3)[-1]
    assert "value" not in kept
