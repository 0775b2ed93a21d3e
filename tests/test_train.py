"""The training engine on the real offline preset (fmnist-vit → MNIST digits), kept short."""

from __future__ import annotations

import math
import threading

import pytest
import torch

from symlora.lab.train import RunConfig, run, train
from symlora.lab.zoo import load_model


@pytest.fixture(scope="module")
def vit():
    torch.set_num_threads(2)
    return load_model("fmnist-vit")


def short(**kw) -> RunConfig:
    return RunConfig.from_preset("digits", device="cpu", **({"steps": 12, "eval_every": 6, "batch_size": 32} | kw))


def test_event_stream_shape_and_cadence(vit):
    events = list(run(short(emit_every=3), base=vit))
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    steps = [e.step for e in events if e.kind in ("step", "eval")]
    assert steps == sorted(steps) and steps[-1] == 12
    assert all(b - a <= 3 for a, b in zip([0] + steps, steps)), "an event at least every emit_every steps"
    first = events[1]
    for name in ("loss", "smoothed_loss", "lr", "eta_s", "throughput"):
        assert getattr(first, name) is not None and math.isfinite(getattr(first, name)), name
    assert first.throughput_unit == "images/s"
    evals = [e for e in events if e.kind == "eval"]
    assert [e.step for e in evals] == [6, 12]
    assert all(e.metric is not None and 0 <= e.metric <= 1 for e in evals)
    assert all(e.spectrum and all(len(rows[0]) == 8 for rows in e.spectrum.values()) for e in evals)
    mem = first.memory
    assert mem.frozen > 0 and mem.trainable > 0 and mem.grads == mem.trainable
    assert 0 <= mem.optimizer - 2 * mem.trainable < 1024, "AdamW keeps two moments (+ step counters)"
    assert mem.activations > 0, "activations saved for backward are measured"
    result = events[-1].result
    assert result.status == "done" and result.steps_done == 12 and result.metric_after > result.metric_before
    assert all(t.device.type == "cpu" for t in result.trainable_state.values())
    assert events[-1].to_dict()["result"]["metric_after"] == result.metric_after


@pytest.mark.slow
def test_loss_drops_and_accuracy_rises(vit):
    result = train(short(steps=40, eval_every=40, batch_size=64), base=vit)
    first, last = result.history[1]["loss"], result.history[-2]["loss"]
    assert last < 0.7 * first
    assert result.metric_after > result.metric_before + 0.3


@pytest.mark.slow
def test_same_seed_same_losses_different_seed_differs(vit):
    def losses(seed):
        return [e.loss for e in run(short(seed=seed, emit_every=1, eval_every=100), base=vit) if e.kind == "step"]

    a, b, c = losses(3), losses(3), losses(4)
    assert a == b
    assert a != c


def test_base_model_is_never_modified(vit):
    before = {k: v.clone() for k, v in vit.model.state_dict().items()}
    train(short(steps=3), base=vit)
    after = vit.model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_stop_ends_the_run_within_one_step(vit):
    stop = threading.Event()
    seen = []
    for event in run(short(steps=200, emit_every=1), base=vit, stop=stop):
        seen.append(event)
        if event.step == 5:
            stop.set()
    final = seen[-1]
    assert final.kind == "stopped" and final.result.status == "stopped"
    assert final.result.steps_done == 5
    assert "stopped" in final.message


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        # 6 blocks: qkv (3 blocks of 192·8 + 8) and proj (192·8 + 8), plus a 192→10 head.
        ("symlora", 6 * (3 * (192 * 8 + 8) + (192 * 8 + 8)) + 192 * 10 + 10),
        ("lora", 6 * (8 * (192 + 576) + 8 * (192 + 192)) + 192 * 10 + 10),
        ("head-only", 192 * 10 + 10),
        ("full", None),
    ],
)
def test_trainable_count_per_method(vit, method, expected):
    start = next(iter(run(short(method=method, steps=1), base=vit)))
    total = sum(p.numel() for p in vit.model.parameters())
    assert start.trainable_params == (expected if expected is not None else total)
    assert start.total_params >= total


def test_a_diverging_run_ends_with_an_error_event(vit, monkeypatch):
    from symlora.lab.tasks import ImageClassification

    real_loss = ImageClassification.loss
    calls = []

    def loss_that_blows_up(self, model, batch):  # what a far too large learning rate leads to, at step 4
        calls.append(1)
        return real_loss(self, model, batch) * (float("inf") if len(calls) >= 4 else 1.0)

    monkeypatch.setattr(ImageClassification, "loss", loss_that_blows_up)
    events = list(run(short(method="full", steps=30, emit_every=1), base=vit))
    final = events[-1]
    assert final.kind == "error" and final.result.status == "error"
    assert "learning rate" in final.message and final.result.steps_done == 3


def test_an_absurd_learning_rate_is_refused_before_training():
    with pytest.raises(ValueError, match=r"lr must be a finite number in \(0, 1e\+06\], got 1e\+30"):
        RunConfig.from_preset("digits", lr=1e30)


def test_bad_config_values_raise_clear_errors():
    with pytest.raises(ValueError, match="method"):
        RunConfig.from_preset("digits", method="dora")
    with pytest.raises(ValueError, match="steps"):
        RunConfig.from_preset("digits", steps=0)
    with pytest.raises(ValueError, match="lr"):
        RunConfig.from_preset("digits", lr=float("nan"))
    with pytest.raises(ValueError, match="preset"):
        RunConfig.from_preset("nope")
    with pytest.raises(ValueError, match="unknown setting 'rank'"):
        RunConfig.from_preset("digits", rank=4)
    with pytest.raises(ValueError, match=r"^r must be a whole number from 1 to 4,096, got 3.7$"):
        RunConfig.from_preset("digits", r=3.7)


@pytest.mark.slow
def test_default_lambda_learning_rate_speeds_up_symlora_start(vit):
    """The default Λ learning rate (×√n, symlora.optim) beats the plain one early on."""
    def acc_after(**kw):
        return train(short(method="symlora", steps=25, eval_every=25, batch_size=64, lr=3e-3, **kw), base=vit).metric_after

    assert acc_after() > acc_after(lambda_lr_ratio=1.0) + 0.05


def test_nan_loss_ends_the_run_with_an_error_at_its_step(vit, monkeypatch):
    """Losses are read once per event, not per step: a NaN at step 3 with events every 5 steps
    must still end the run with the error naming step 3, and with 2 steps done."""
    from symlora.lab.tasks import ImageClassification

    calls = []
    honest = ImageClassification.loss

    def loss(self, model, batch):
        calls.append(1)
        value = honest(self, model, batch)
        return value * float("nan") if len(calls) == 3 else value

    monkeypatch.setattr(ImageClassification, "loss", loss)
    events = list(run(short(steps=12, emit_every=5, eval_every=100, emit_interval_s=1e9), base=vit))
    final = events[-1]
    assert final.kind == "error" and final.result.status == "error"
    assert "step 3" in final.message and "learning rate" in final.message
    assert final.step == final.result.steps_done == 2
    assert all(math.isfinite(e.loss) for e in events if e.loss is not None), "no NaN is ever shown as a loss"


def test_memory_measured_once_and_spectra_only_at_evaluations(vit):
    events = list(run(short(steps=8, emit_every=1, eval_every=4), base=vit))
    steps = [e for e in events if e.kind in ("step", "eval")]
    assert [e.step for e in steps] == list(range(1, 9))
    assert all(e.spectrum is None for e in steps if e.kind == "step")
    assert [e.step for e in events if e.spectrum] == [0, 4, 8, 8], "start, each evaluation, the end"
    memory = events[-1].result.memory
    assert memory.activations > 0 and memory.trainable > 0 and memory.grads == memory.trainable
    assert memory.optimizer >= 2 * memory.trainable
    assert all(e.memory == memory for e in steps), "the first step's breakdown is shown throughout"


def test_adapter_settings_of_the_config_reach_the_layers(vit):
    """lora_dropout and modules_to_save, set on the run, are what the model gets (they used
    to be unreachable from a run); such a run trains alone in the engine, where dropout
    masks and whole trained modules cannot be shared with other runs."""
    from torch import nn

    from symlora.lab.multirun import stackable
    from symlora.lab.train import prepare
    from symlora.model import adapter_layers

    cfg = short(lora_dropout=0.2, modules_to_save=["norm"])
    bundle, _, adapter = prepare(cfg, base=vit)
    layers = [layer for _, layer in adapter_layers(bundle.model)]
    assert layers and all(isinstance(m.lora_dropout, nn.Dropout) and m.lora_dropout.p == 0.2 for m in layers)
    assert adapter.modules_to_save == ["norm", bundle.head_name]
    assert all(p.requires_grad for p in bundle.model.get_submodule("norm").parameters())
    assert cfg.adapter.modules_to_save == ["norm"], "the config itself is not changed by the run"
    assert "dropout" in stackable(vit, cfg)
    assert "modules_to_save" in stackable(vit, short(modules_to_save=["norm"]))
    assert stackable(vit, short()) is None
