"""The app's pure parts, without a server: links, counts, tracking, stop flags, analysis.

Seconds to run (tiny models from conftest; no pretrained weights).
"""

from __future__ import annotations

import os
import threading
import time
import zipfile
from types import SimpleNamespace

import pytest
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from app.learn import calculator, toy_delta_w  # noqa: E402
from app.params import equal_budget_rank, estimate, formula_text, kind_of, kinds_for, layer_kinds  # noqa: E402
from app.runner import Job, Tracker  # noqa: E402
from app.sessions import Runs  # noqa: E402
from app.settings import app_config, run_config_from_ui, ui_values_from  # noqa: E402
from app.share import Lesson, parse_query, to_query  # noqa: E402


# --------------------------------------------------------------------------- share links
def test_share_link_round_trips_every_setting():
    s = app_config("digits", method="lora", r=5, lora_alpha=12.5, target_modules=["attn.qkv", "mlp.fc1"],
                   lr=0.0025, steps=77, batch_size=48, seed=4242, device="cpu", lora_dropout=0.1)
    query = to_query(s, Lesson(True, ["try", "train"], ["digits"]))
    shared = parse_query(query)
    assert shared.problems == []
    assert shared.config("digits") == s
    assert shared.lesson == Lesson(True, ["train", "try"], ["digits"])  # panels in page order


def test_a_preset_with_overrides_round_trips_through_the_controls_and_a_link():
    """What the page shows is what runs: config → controls → config, and config → link →
    config, give back the very same run (so the same run key)."""
    from app.settings import FIELDS
    from symlora.lab.engine import run_key

    for preset in ("digits", "fortunes"):
        config = app_config(preset, method="lora", r=4, lora_alpha=8.0, steps=30, seed=3)
        again = run_config_from_ui(*ui_values_from(config).values())
        assert again == config and run_key(again) == run_key(config)
        assert parse_query(to_query(config)).config(preset) == config
        assert tuple(ui_values_from(config)) == FIELDS


def test_a_bad_control_value_is_refused_once_with_one_line():
    from app.settings import FIELDS

    values = ui_values_from(app_config("digits"))
    for name, bad, says in [("r", 3.7, "r must be a whole number from 1 to 64, got 3.7"),
                            ("steps", 5000, "steps must be a whole number from 1 to 1,000, got 5000"),
                            ("lr", float("nan"), "lr must be a finite number in [1e-06, 1], got nan")]:
        with pytest.raises(ValueError) as err:
            run_config_from_ui(*(values | {name: bad}).values())
        assert str(err.value) == says and "\n" not in str(err.value)
    assert len(values) == len(FIELDS)


def test_a_mangled_link_still_opens_with_notes():
    shared = parse_query("?r=abc&steps=-3&lr=nan&method=magic&seed=12&unknown=1")
    assert shared.values == {"seed": 12}
    assert len(shared.problems) == 4 and all("ignored" in p for p in shared.problems)
    assert not shared.lesson.enabled


# --------------------------------------------------------------------------- parameter counts
def test_counts_match_what_injection_makes(make_vit):
    """The live counter's numbers equal count_parameters() after a real inject."""
    import symlora

    model = make_vit(0)
    for method, r in (("symlora", 3), ("lora", 3), ("symlora", 1)):
        est = estimate(model, method, r, ["attn.qkv", "attn.proj", "mlp.fc2"])
        copy = make_vit(0)
        symlora.inject(copy, symlora.AdapterConfig(method=method, r=r, target_modules=["attn.qkv", "attn.proj", "mlp.fc2"]))
        real = symlora.count_parameters(copy)
        assert (est.trainable, est.total) == (real.trainable, real.total), method


def test_symlora_needs_about_half_of_lora_on_square_layers(make_vit):
    model = make_vit(0)
    sym = estimate(model, "symlora", 4, ["attn.proj"])
    lora = estimate(model, "lora", 4, ["attn.proj"])
    assert sym.adapter == 2 * (16 * 4 + 4) and lora.adapter == 2 * (2 * 16 * 4)


@pytest.mark.parametrize("targets", [["attn.qkv", "attn.proj"], ["attn.proj", "mlp.fc2"], "all-linear"])
def test_compares_equal_budget_rank_is_the_closest_count(make_vit, targets):
    """The Compare tab's equal-budget SymLoRA rank has the adapter count closest to LoRA's
    (a search over every rank the app allows, each method on the layers it would adapt)."""
    model = make_vit(0)
    for r in (1, 2, 5, 8, 40):
        n_lora = estimate(model, "lora", r, targets).adapter
        searched = min(range(1, 65), key=lambda x: abs(estimate(model, "symlora", x, targets).adapter - n_lora))
        assert equal_budget_rank(model, r, targets, max_rank=64) == searched, r


def test_compare_says_when_symloras_budget_rank_hits_the_apps_limit(make_vit):
    """At LoRA r = 64 an equal budget would need SymLoRA r ≈ 128, past the app's limit of 64:
    the plan keeps r = 64 and its sentence says SymLoRA has fewer weights; at r = 8 it does not."""
    from app.tab_compare import plan

    model = make_vit(0)
    bundle = SimpleNamespace(model=model, head_name="head", default_targets=["attn.proj"])
    lab = SimpleNamespace(bases=SimpleNamespace(model=lambda name: bundle))
    for r, capped in ((8, False), (64, True)):
        settings = app_config("digits").replace(method="lora", r=r, target_modules=["attn.proj"])
        (lora, sym), how = plan(lab, settings, "budget", include_head=False)
        assert (lora.adapter.r, sym.adapter.r <= 64) == (r, True)
        assert ("fewer weights than LoRA" in how) == capped, how
        if capped:
            assert sym.adapter.r == 64 and estimate(model, "symlora", 64, ["attn.proj"]).adapter < \
                estimate(model, "lora", 64, ["attn.proj"]).adapter


def test_formula_text_shows_each_shapes_count(make_vit):
    est = estimate(make_vit(0), "symlora", 3, ["attn.qkv", "mlp.fc2"])
    assert formula_text(est, 3).splitlines() == [
        "- 2 × layer 16→48: 3 blocks × (n·r + r) = 3·(16·3 + 3) = 153",
        "- 2 × layer 64→16: 4 blocks × (n·r + r) = 4·(16·3 + 3) = 204",
    ]
    lora = estimate(make_vit(0), "lora", 3, ["attn.proj", "attn.qkv"])
    assert formula_text(lora, 3).splitlines() == [
        "- 2 × layer 16→48: r·(in + out) = 3·(16 + 48) = 192",
        "- 2 × layer 16→16: 2·n·r = 2·16·3 = 96",
    ]


def test_layer_kinds_group_blocks_and_flag_what_symlora_can_adapt(make_vit):
    kinds = {k.suffix: k for k in layer_kinds(make_vit(0), exclude=("head",))}
    assert set(kinds) == {"attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"}
    assert kinds["attn.qkv"].count == 2 and kinds["attn.qkv"].symmetric
    assert "3 blocks" in kinds["attn.qkv"].describe()
    assert kind_of("model.layers.7.self_attn.q_proj") == "self_attn.q_proj"
    assert kinds_for(make_vit(0), r".*\.fc\d") == ["mlp.fc1", "mlp.fc2"]


def test_head_only_and_full_counts_use_the_new_head(make_vit):
    model = make_vit(0)  # head 16 → 5
    head = estimate(model, "head-only", 8, None, head_name="head", n_classes=10)
    assert head.trainable == 16 * 10 + 10
    full = estimate(model, "full", 8, None, head_name="head", n_classes=10)
    assert full.trainable == full.total == sum(p.numel() for p in model.parameters()) - (16 * 5 + 5) + 170


def test_calculator_and_toy():
    table = calculator(192, 576, 8, 6)
    assert "6,144" in table and "4,632" in table and "75%" in table
    assert "LoRA only" in calculator(100, 150, 8, 1)
    dw, eig = toy_delta_w(1.0, -0.5, 0.0, orthonormal=True)
    assert torch.allclose(dw, dw.T)
    assert sorted(round(float(v), 6) for v in eig) == [-0.5, 0.0, 1.0]


# --------------------------------------------------------------------------- runs and stops
def fake_event(kind, step, loss=None, metric=None, spectrum=None):
    return SimpleNamespace(kind=kind, step=step, loss=loss, smoothed_loss=loss, metric=metric, spectrum=spectrum,
                           metric_name="accuracy", is_final=kind in ("done", "stopped", "error"))


def test_tracker_builds_curves_and_spectrum_snapshots():
    t = Tracker("SymLoRA r=2", "symlora")
    spec = {"blocks.0.attn.proj": [[0.0, 0.0]]}
    assert t.add(fake_event("start", 0, metric=0.1, spectrum=spec))
    t.add(fake_event("step", 5, loss=2.0))
    assert t.add(fake_event("eval", 10, loss=1.5, metric=0.6, spectrum=spec))
    assert t.add(fake_event("done", 10, loss=1.5, metric=0.6, spectrum=spec))
    assert t.curve.steps == [5, 10] and t.curve.eval_steps == [0, 10] and t.curve.metric == [0.1, 0.6]
    assert [s for s, _ in t.spectra] == [0, 10]


def test_stop_reaches_only_the_named_session_and_wait_returns_the_final():
    runs = Runs()
    a, b = runs.begin("alice", "train"), runs.begin("bob", "train")
    assert runs.stop("alice") == 1 and a.is_set() and not b.is_set()
    threading.Timer(0.2, lambda: runs.finish("alice", "train", a, final=("stopped",))).start()
    assert runs.wait_final("alice", "train", timeout=5) == ("stopped",)
    assert runs.active() == 1 and runs.active("bob") == 1
    runs.finish("bob", "train", b)
    assert runs.active() == 0


def test_a_closed_handler_stops_its_worker():
    """Gradio closes a cancelled handler; the Job then sets the stop flag itself."""
    flag = threading.Event()

    def producer():
        while not flag.is_set():
            yield "tick"
            time.sleep(0.01)

    job = Job(producer(), flag)
    relay = job.relay()
    assert next(relay) == "tick"
    relay.close()
    job.thread.join(timeout=5)
    assert flag.is_set() and not job.thread.is_alive()


def test_worker_errors_reach_the_handler():
    def producer():
        yield 1
        raise ValueError("Target modules ['x'] not found")

    with pytest.raises(ValueError, match="not found"):
        list(Job(producer(), threading.Event()).relay())


# --------------------------------------------------------------------------- analysis
def test_symmetry_merge_check_and_downloads(make_vit, randomize, vit_batch):
    import symlora
    from app.analysis import adapter_downloads, merge_check, symmetric_share

    base = SimpleNamespace(model=make_vit(0))
    model = make_vit(0)
    symlora.inject(model, symlora.AdapterConfig(method="symlora", r=2, target_modules=["attn.qkv", "attn.proj"]))
    randomize(model)
    tuned = SimpleNamespace(model=model)
    share, blocks = symmetric_share(model)
    assert share == pytest.approx(1.0) and blocks == 2 * (3 + 1)

    text = merge_check(tuned, base, vit_batch[0])
    assert text.startswith("✓") and "forward pass" in text
    assert not any(layer.merged for _, layer in symlora.adapter_layers(model))  # left as it was

    own, peft = adapter_downloads(tuned, "test")
    assert set(zipfile.ZipFile(own).namelist()) == {"adapter_config.json", "adapter_model.safetensors", "README.md"}
    assert '"LORA"' in zipfile.ZipFile(peft).read("adapter_config.json").decode()
    assert "## Load it" in zipfile.ZipFile(peft).read("README.md").decode()

    lora = make_vit(0)
    symlora.inject(lora, symlora.AdapterConfig(method="lora", r=2, target_modules=["attn.proj"]))
    randomize(lora)
    share, _ = symmetric_share(lora)
    assert 0.2 < share < 0.8  # a random update is about half symmetric


def test_merge_timing_sentence_follows_the_numbers():
    """"Costs the same" only when the medians agree; a 3× gap is reported as such, with
    what noise means — never next to "the same"."""
    from app.analysis import interleaved_medians, timing_sentence

    assert "costs the same here" in timing_sentence((10.0, 0.5), (10.8, 0.4))
    text = timing_sentence((114.0, 3.0), (34.0, 2.0))
    assert "costs the same here" not in text and "0.30×" in text and "busy machine" in text
    calls = []
    times = interleaved_medians({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=7)
    assert calls == ["a", "b"] + ["a", "b"] * 7  # a warm-up each, then interleaved
    assert set(times) == {"a", "b"} and all(median >= 0 for median, _ in times.values())


# --------------------------------------------------------------------------- command line
def test_command_line_defaults_and_environment(monkeypatch):
    from app.__main__ import parse_args

    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    args = parse_args([])
    assert (args.host, args.port) == ("127.0.0.1", 7860)
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "8080")
    assert (parse_args([]).host, parse_args([]).port) == ("0.0.0.0", 8080)
    assert parse_args(["--host", "::1", "--port", "9000"]).port == 9000


def test_runs_evaluate_as_often_as_their_preset_whatever_the_length():
    from app.settings import eval_every

    n = 100 // eval_every("digits", 100)
    assert 20 // eval_every("digits", 20) == n and 1000 // eval_every("digits", 1000) == n
    assert app_config("digits", steps=20).eval_every == eval_every("digits", 20)


def test_short_runs_are_evaluated_before_and_after_only():
    """An evaluation of the test set costs several training steps: a 5-step run must not pay one per step."""
    from app.settings import MIN_EVAL_GAP, eval_every

    assert eval_every("digits", 5) >= 5 == MIN_EVAL_GAP
    assert eval_every("digits", 12) >= MIN_EVAL_GAP


def test_a_burst_of_memory_clean_ups_runs_one_now_and_one_after(monkeypatch):
    """30 runs ending at once must not run 30 full garbage collections back to back."""
    import app.sessions as sessions

    calls = []
    monkeypatch.setattr(sessions, "_clean_up", lambda: calls.append(time.monotonic()))
    freer = sessions._Freer()
    for _ in range(30):
        freer()
    assert len(calls) == 1
    deadline = time.monotonic() + 10 * sessions.FREE_EVERY_S
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(calls) == 2, "the burst is followed by one more clean-up"


def test_status_note_says_company_and_replays():
    from symlora.lab.events import TrainEvent

    step = TrainEvent("step", 3, total_steps=10, method="symlora", loss=1.0)
    t = Tracker("SymLoRA r=8", "symlora")
    t.add(step)
    assert t.note == ""
    t.peers = 4
    assert t.note == " · training together with 4 other runs"
    t.shared, t.shared_age_s = "finished", 130
    assert "same settings as a run 2 min ago: replaying it — change the seed for your own" in t.note.lower()


def test_run_flag_state_is_the_engines_non_blocking_control(tmp_path, monkeypatch):
    from app.sessions import RunFlag

    monkeypatch.setattr(RunFlag, "ROOT", tmp_path)
    flag = RunFlag()
    assert flag.state() == "run"
    flag.pause()
    assert flag.state() == "pause"
    flag.step()
    assert [flag.state(), flag.state()] == ["run", "pause"], "Step lets exactly one step through"
    flag.set()
    assert flag.state() == "stop"
    flag.close()


def test_a_closed_sessions_state_is_released_after_the_grace_period():
    """Gradio keeps a closed tab's page state (a copy of the whole page's config, and its
    State values for an hour); the app releases it — State values through their
    delete_callback (tuned models dropped) — while an open session keeps everything."""
    import gradio as gr
    from gradio.state_holder import StateHolder

    from app.sessions import release_session

    dropped: list = []
    with gr.Blocks() as demo:
        runs = gr.State({}, delete_callback=dropped.append)
    holder = StateHolder()
    holder.set_blocks(demo)
    for session in ("closed", "open"):
        holder[session][runs._id] = {"run": session}
    holder["closed"].is_closed = True
    for session in ("closed", "open"):
        release_session(demo, session, grace_s=0).join(timeout=10)
    assert "closed" not in holder.session_data and dropped == [{"run": "closed"}]
    assert holder["open"][runs._id] == {"run": "open"}, "an open session keeps its state"
    assert release_session(object(), "closed") is None, "no state holder: nothing to do"


def test_zero_gpu_keeps_the_per_run_path(monkeypatch):
    """On ZeroGPU a run must happen inside spaces.GPU: stream calls train_stream, not the engine."""
    import app.gpu as gpu
    from app.runner import stream
    from symlora.lab.events import TrainEvent

    calls = []

    def fake_train_stream(config, data=None, control=None):
        calls.append((config["seed"], control))
        yield {"event": TrainEvent("start", 0, total_steps=2, method="symlora", metric=0.1).to_payload()}

    monkeypatch.setattr(gpu, "ZERO_GPU", True)
    monkeypatch.setattr(gpu, "train_stream", fake_train_stream)
    flag = SimpleNamespace(path="/tmp/flag", state=lambda: "run")
    out = list(stream(app_config("digits", steps=2, seed=7), stop=flag, label="x"))
    assert calls == [(7, "/tmp/flag")] and out[0][0].kind == "start"


# --------------------------------------------------------------------------- issue 16: numbers people read
def test_the_loss_line_follows_a_short_run_and_the_status_labels_each_number():
    """On a 12-step run the smoothed line ends near the last points (the old fixed 0.9
    average ended far above them); the status names the last batch's loss, the smoothed
    one and the held-out loss that goes with the perplexity."""
    import math

    from app.runner import status_line
    from symlora.lab.events import LossSmoother, TrainEvent

    losses = [3.4 * 0.8 ** i for i in range(12)]
    smoother = LossSmoother(12)
    smoothed = [smoother.add(x) for x in losses]
    assert smoothed[0] == pytest.approx(losses[0])  # bias-corrected: no pull towards 0 at the start
    # For a loss falling by ×0.8 a step, an average over ~1.5 steps sits ≤ 15 % above the last point.
    assert smoothed[-1] <= 1.15 * losses[-1]
    old = losses[0]
    for x in losses[1:]:
        old = 0.9 * old + 0.1 * x
    assert old > 3 * losses[-1]  # what the page showed before: the lag of issue 16
    assert LossSmoother(300).beta == pytest.approx(0.9)  # long runs keep a calm line

    event = TrainEvent("eval", 6, total_steps=12, method="lora", loss=1.31, smoothed_loss=1.4, metric=3.85,
                       metric_name="perplexity")
    text = status_line(event)
    assert "training loss 1.310 (last batch; smoothed 1.400)" in text
    assert f"held-out perplexity **3.85** (held-out loss {math.log(3.85):.3f}" in text


def test_the_try_tab_follows_the_style_and_the_name_of_the_users_data():
    import numpy as np
    import torch

    from app.tab_try import download_name, is_dark, match_background, sketch_style

    ink = torch.full((4, 28, 28), 250, dtype=torch.uint8)
    ink[:, 10:18, 10:18] = 0
    assert not is_dark(ink) and is_dark(255 - ink)
    assert "black on white" in sketch_style(False)["label"] and "white on black" in sketch_style(True)["label"]
    drawn_on_black = np.zeros((20, 20, 3), np.uint8)
    assert match_background(drawn_on_black, dark=False).mean() == 255  # flipped to the data's paper white
    assert match_background(drawn_on_black, dark=True).mean() == 0

    s = app_config("digits")
    saved = SimpleNamespace(config=s, data_name="My Letters (v2).zip")
    assert download_name(saved) == f"my-letters-v2-{s.method}-r{s.adapter.r}"
    assert download_name(SimpleNamespace(config=s, data_name=None)).startswith("digits-")
