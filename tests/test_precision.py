"""The compute dtype of a run (symlora.lab.precision): bf16 autocast on CPUs that have it natively.

The other tests pin float32 (conftest); these ask for each dtype themselves.
"""

from __future__ import annotations

import pytest
import torch

from symlora import fast
from symlora.lab import precision
from symlora.lab.engine import run_key
from symlora.lab.train import RunConfig, prepare, train
from symlora.lab.zoo import load_model

from conftest import tiny_vit

needs_bf16 = pytest.mark.skipif(not precision.cpu_bf16_native(),
                                reason="this CPU has no native bf16 matrix units (AVX512-BF16 / AMX)")


def test_explicit_choices_and_the_environment_switch(monkeypatch):
    monkeypatch.delenv(precision.ENV_CPU_DTYPE, raising=False)
    assert precision.compute_dtype("cpu", "float32") == torch.float32
    assert precision.compute_dtype("cpu", "bfloat16") == torch.bfloat16
    assert precision.compute_dtype("cuda", "auto") == torch.bfloat16  # as always on a GPU
    assert precision.compute_dtype("cuda", "float32") == torch.float32
    assert precision.evaluation_dtype("cuda") == torch.float32
    with pytest.raises(ValueError, match="dtype must be one of"):
        precision.compute_dtype("cpu", "float16")
    monkeypatch.setenv(precision.ENV_CPU_DTYPE, "float32")
    assert precision.compute_dtype("cpu") == torch.float32
    monkeypatch.setenv(precision.ENV_CPU_DTYPE, "bfloat16")
    assert precision.compute_dtype("cpu") == torch.bfloat16
    assert precision.compute_dtype("cpu", "float32") == torch.float32, "an explicit choice beats the switch"
    monkeypatch.setenv(precision.ENV_CPU_DTYPE, "half")
    with pytest.raises(ValueError, match="SYMLORA_CPU_DTYPE must be float32 or bfloat16"):
        precision.compute_dtype("cpu")


@pytest.mark.parametrize("native", [False, True])
def test_auto_follows_the_cpu(monkeypatch, native):
    monkeypatch.delenv(precision.ENV_CPU_DTYPE, raising=False)
    monkeypatch.setattr(precision, "cpu_bf16_native", lambda: native)
    assert precision.compute_dtype("cpu") == (torch.bfloat16 if native else torch.float32)


def test_the_probe_answers_without_raising():
    assert isinstance(precision.cpu_bf16_native(), bool)


def test_fused_attention_is_turned_off_for_bf16_on_the_cpu_only():
    def flags(model):
        return {m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")}

    model = tiny_vit(0)
    fused = flags(model)
    precision.prepare_model(model, "cpu", torch.float32)
    assert flags(model) == fused
    precision.prepare_model(model, "cuda", torch.bfloat16)
    assert flags(model) == fused
    precision.prepare_model(model, "cpu", torch.bfloat16)
    assert flags(model) == {False}


def test_the_run_key_names_the_dtype(monkeypatch):
    cfg = RunConfig.from_preset("digits", device="cpu", steps=5)
    monkeypatch.setenv(precision.ENV_CPU_DTYPE, "float32")
    fp32 = run_key(cfg, device="cpu")
    monkeypatch.setenv(precision.ENV_CPU_DTYPE, "bfloat16")
    assert run_key(cfg, device="cpu") != fp32, "a bf16 run is not replayed for a float32 one"


@needs_bf16
def test_a_bf16_cpu_run_trains_through_the_fast_paths_bf16_branch(monkeypatch):
    monkeypatch.setenv(precision.ENV_CPU_DTYPE, "bfloat16")
    calls = {"add beside": 0, "fold": 0}
    expand_into, fold_weight = fast.expand_into, fast.fold_weight

    def counting_expand(*args, **kw):
        calls["add beside"] += 1
        return expand_into(*args, **kw)

    def counting_fold(*args, **kw):
        calls["fold"] += 1
        return fold_weight(*args, **kw)

    monkeypatch.setattr(fast, "expand_into", counting_expand)
    monkeypatch.setattr(fast, "fold_weight", counting_fold)
    vit = load_model("fmnist-vit")
    cfg = RunConfig.from_preset("digits", device="cpu", steps=40, eval_every=40, batch_size=64)
    bundle, task, _ = prepare(cfg, base=vit)
    assert task.dtype == torch.bfloat16
    assert not any(getattr(m, "fused_attn", False) for m in bundle.model.modules())
    result = train(cfg, base=vit)
    first, last = result.history[1]["loss"], result.history[-2]["loss"]
    assert last < 0.7 * first
    assert result.metric_after > result.metric_before + 0.3
    assert calls["add beside"] > 0 and calls["fold"] == 0, "under autocast ΔW is added beside x·Wᵀ, never folded"
    assert all(t.dtype == torch.float32 for t in result.trainable_state.values()), "master weights stay float32"
