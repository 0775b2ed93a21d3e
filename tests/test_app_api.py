"""The app as a script sees it: its public API through gradio_client.

One app is launched in this process for the module; a client streams a short run on the
default preset through ``/train``, then asks ``/predict`` in the same session.  About
30–60 s on a 2-core CPU.
"""

from __future__ import annotations

import json
import time
import urllib.parse

import numpy as np
import pytest

from app_harness import train_args

gradio_client = pytest.importorskip("gradio_client")

STEPS = 20


def event_of(update) -> dict:
    """The raw engine event of an update ({} for updates that carry none, e.g. "Preparing…")."""
    raw = update[6]
    event = json.loads(raw) if isinstance(raw, str) else (raw or {})
    return event if "kind" in event else {}


@pytest.fixture(scope="module")
def trained(served, client):
    """The streamed updates of one short default run (shared by the tests below)."""
    demo, _ = served
    t0 = time.perf_counter()
    job = client.submit(*train_args(demo, steps=STEPS), api_name="/train")
    updates = list(job)
    return updates, time.perf_counter() - t0


@pytest.mark.slow
def test_train_streams_several_updates_and_the_metric_improves(trained):
    updates, wall = trained
    events = [event_of(u) for u in updates if event_of(u)]
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done", kinds
    assert len(events) >= 5, f"only {len(events)} streamed updates"
    result = events[-1]["result"]
    assert result["steps_done"] == STEPS
    assert result["metric_name"] == "accuracy"
    assert result["metric_after"] > result["metric_before"] + 0.05, result
    assert "Done" in updates[-1][0]
    curves = json.loads(updates[-1][1]["plot"])
    assert any(trace.get("x") for trace in curves["data"]), "the curves plot holds no data"
    assert curves["layout"]["uirevision"], "zoom would not survive updates"
    spectrum = json.loads(updates[-1][3]["plot"])
    assert any(trace["type"] == "heatmap" for trace in spectrum["data"])
    print(f"\n/train {STEPS} steps: {len(events)} updates in {wall:.1f} s; "
          f"accuracy {result['metric_before']:.3f} -> {result['metric_after']:.3f}")


@pytest.mark.slow
def test_parameter_count_before_training_is_what_the_run_trains(served, trained):
    """The live counter next to the settings shows the engine's exact trainable count."""
    from app.tab_train import param_view

    demo, _ = served
    s = demo.lab.default_config()
    text, _ = param_view(demo.lab, s.model, s.data, s.method, s.adapter.r, s.adapter.target_modules)
    start = next(event_of(u) for u in trained[0] if event_of(u).get("kind") == "start")
    assert f"trains **{start['trainable_params']:,}** of {start['total_params']:,}" in text
    assert "n·r + r" in text  # the formula is shown


@pytest.mark.slow
def test_predict_returns_probabilities_that_sum_to_one(client, trained, tmp_path):
    from PIL import Image

    img = np.zeros((28, 28), np.uint8)
    img[4:24, 12:16] = 255  # a "1"
    path = tmp_path / "one.png"
    Image.fromarray(img).save(path)
    base, tuned, probs, note = client.predict(gradio_client.handle_file(str(path)), "Latest run", "fmnist-vit",
                                              api_name="/predict")
    assert abs(sum(probs["base"].values()) - 1) < 1e-3
    assert abs(sum(probs["tuned"].values()) - 1) < 1e-3
    assert set(probs["tuned"]) == {str(d) for d in range(10)}  # the tuned head knows digits
    assert "T-shirt/top" in probs["base"]  # the base model only knows clothes
    assert len(tuned["confidences"]) == 5 and tuned["label"] in probs["tuned"]


def test_engine_errors_come_back_as_readable_messages(served, client):
    demo, _ = served
    with pytest.raises(Exception) as info:
        client.predict(*train_args(demo, steps=5, targets=["no_such_layer"]), api_name="/train")
    message = str(info.value)
    assert "not found" in message and "attn.qkv" in message, message  # the core names the eligible layers


def test_share_link_round_trip(served, client):
    """A link built by the app restores every control when the app reads it back."""
    from app.settings import app_config, ui_values_from
    from app.ui import restore
    from symlora.lab.runconfig import RunConfig

    demo, _ = served
    wanted = app_config("digits", method="lora", r=5, lora_alpha=10.0, target_modules=["attn.qkv"],
                        lr=0.002, steps=33, batch_size=32, seed=1234, device="cpu")
    args = train_args(demo, **ui_values_from(wanted))
    query = client.predict(*args, True, ["train", "try"], ["digits"], api_name="/share_link")
    assert query.startswith("?") and "seed=1234" in query and "lesson=1" in query
    restored, lesson, problems = restore(demo.lab, dict(urllib.parse.parse_qsl(query[1:])))
    assert problems == []
    assert restored == wanted
    assert lesson.enabled and lesson.panels == ["train", "try"] and lesson.presets == ["digits"]
    assert isinstance(restored, RunConfig)


def test_stopping_a_session_ends_its_run_within_a_step(served):
    """What Stop and a closed tab do: the session's run ends early, as "stopped"."""
    demo, url = served
    other = gradio_client.Client(url, verbose=False)
    # a seed of its own: identical settings run elsewhere in this process would be shared
    job = other.submit(*train_args(demo, steps=1000, seed=int(time.time_ns() % 2**31)), api_name="/train")
    deadline = time.time() + 60
    while time.time() < deadline:  # wait until it is really training
        outs = job.outputs()
        if outs and event_of(outs[-1]).get("kind") in ("step", "eval"):
            break
        time.sleep(0.2)
    assert demo.lab.runs.active(other.session_hash) == 1
    t0 = time.perf_counter()
    assert demo.lab.runs.stop(other.session_hash) == 1
    while not job.done() and time.perf_counter() - t0 < 30:
        time.sleep(0.1)
    final = event_of(job.outputs()[-1])
    assert final["kind"] == "stopped", final["kind"]
    assert final["result"]["steps_done"] < 1000
    assert time.perf_counter() - t0 < 15
    assert demo.lab.runs.active(other.session_hash) == 0
