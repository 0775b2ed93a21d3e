"""Your own data on the Train tab: a zip of images (one folder per class) or pasted text.

Through gradio_client against an app in this process: a two-class zip (circles vs
squares, drawn with PIL) trains and the Try tab answers with its classes; every kind of
bad upload comes back as a readable message, and the next run still works.  Text and the
ZeroGPU-shaped training call are checked at the unit level (SmolLM2 is slow to load).
About 30–60 s on a 2-core CPU.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from app_harness import train_args
from numerics import assert_same_up_to_rounding, rounding_noise

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import handle_file  # noqa: E402

STEPS = 4
FAST = dict(steps=STEPS, batch_size=16)


def shape_png(kind: str, rng: np.random.Generator, size: int = 28) -> bytes:
    """A white circle or square on black, at a random place and size."""
    from PIL import Image, ImageDraw

    im = Image.new("L", (size, size), 0)
    r = int(rng.integers(5, 10))
    cx, cy = (int(v) for v in rng.integers(r + 1, size - 1 - r, size=2))
    draw = ImageDraw.Draw(im)
    (draw.ellipse if kind == "circle" else draw.rectangle)([cx - r, cy - r, cx + r, cy + r], fill=255)
    out = io.BytesIO()
    im.save(out, "PNG")
    return out.getvalue()


def make_zip(path: Path, members: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return str(path)


def shapes_members(per_class: int = 20, classes=("circle", "square"), seed: int = 0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    return {f"{c}/{i}.png": shape_png(c, rng) for c in classes for i in range(per_class)}


@pytest.fixture(scope="module")
def shapes_zip(tmp_path_factory):
    return make_zip(tmp_path_factory.mktemp("upload") / "shapes.zip", shapes_members())


def fast_train_args(demo, **changes):
    return train_args(demo, **(FAST | changes))


def event_of(update) -> dict:
    raw = update[6]
    event = json.loads(raw) if isinstance(raw, str) else (raw or {})
    return event if "kind" in event else {}


def final_event(updates) -> dict:
    events = [event_of(u) for u in updates if event_of(u)]
    assert events, [u[0] for u in updates]
    return events[-1]


def test_a_zip_of_two_classes_trains_and_try_answers_with_its_classes(served, client, shapes_zip, tmp_path):
    demo, _ = served
    updates = list(client.submit(*fast_train_args(demo), data_zip=handle_file(shapes_zip), api_name="/train"))
    assert any("shapes.zip" in u[0] and "2 classes (circle, square)" in u[0] for u in updates), \
        "the status never named the uploaded data"
    final = final_event(updates)
    assert final["kind"] == "done", final
    result = final["result"]
    assert result["steps_done"] == STEPS and result["metric_name"] == "accuracy"
    assert result["metric_after"] is not None and 0 <= result["metric_after"] <= 1
    assert "shapes.zip" in updates[-1][0] and "Done" in updates[-1][0]

    path = tmp_path / "circle.png"
    path.write_bytes(shape_png("circle", np.random.default_rng(5)))
    base, tuned, probs, note = client.predict(handle_file(str(path)), "Latest run", "fmnist-vit", api_name="/predict")
    assert set(probs["tuned"]) == {"circle", "square"}, "the tuned model does not know the uploaded classes"
    assert "T-shirt/top" in probs["base"]  # the base model still answers with its own classes
    assert "shapes.zip" in note


def bad_cases(tmp: Path) -> list[tuple[str, str, str]]:
    """(name, path, words the error must contain)."""
    good = shapes_members(per_class=3)
    corrupt = tmp / "corrupt.zip"
    raw = bytearray(Path(make_zip(tmp / "whole.zip", good)).read_bytes())
    raw[60:64] = bytes(b ^ 0xFF for b in raw[60:64])  # inside the first image: its checksum fails
    corrupt.write_bytes(bytes(raw))
    text_as_zip = tmp / "photos.zip"
    text_as_zip.write_text("these are not photos")
    notes = tmp / "notes.txt"
    notes.write_text("a text file")
    return [
        ("not a zip", str(text_as_zip), "photos.zip is not a zip file"),
        ("corrupt zip", str(corrupt), "corrupt.zip is a corrupt zip file"),
        ("wrong file type", str(notes), "Invalid file type"),
        ("no images", make_zip(tmp / "empty.zip", {"readme.txt": b"hello"}), "holds no images"),
        ("one class", make_zip(tmp / "cats.zip", {f"cat/{i}.png": v for i, v in enumerate(good.values())}),
         "only one class"),
        ("path traversal", make_zip(tmp / "evil.zip", good | {"../evil.png": next(iter(good.values()))}),
         "Unsafe file name"),
        ("oversize", make_zip(tmp / "big.zip", shapes_members(per_class=60)), "big.zip is too large"),
    ]


def test_bad_uploads_come_back_as_readable_errors_and_the_next_run_works(served, client, shapes_zip, tmp_path):
    demo, _ = served
    limits = demo.lab.user_data.limits
    old = limits.zip_bytes
    limits.zip_bytes = 10_000  # the 120-image zip is over it, the 6-image ones are not
    try:
        cases = bad_cases(tmp_path)
        assert os.path.getsize(cases[-1][1]) > 10_000 > max(os.path.getsize(p) for _, p, _ in cases[:-1])
        for name, path, words in cases:
            with pytest.raises(Exception) as info:
                client.predict(*fast_train_args(demo), data_zip=handle_file(path), api_name="/train")
            message = str(info.value)
            assert words in message, f"{name}: {message}"
            assert "Traceback" not in message and "Something went wrong" not in message, f"{name}: {message}"
            print(f"\n{name}: {message}")
    finally:
        limits.zip_bytes = old
    assert demo.lab.runs.active() == 0
    final = final_event(list(client.submit(*fast_train_args(demo, steps=2), data_zip=handle_file(shapes_zip),
                                           api_name="/train")))
    assert final["kind"] == "done" and final["result"]["steps_done"] == 2


def test_the_page_view_of_own_data_and_the_share_link_note(served, shapes_zip, tmp_path):
    """What the Train tab shows for an upload (the same function the page calls)."""
    from app.tab_train import own_data_view

    lab = served[0].lab
    zip_value, accordion, images, text, note, share, user = own_data_view(lab, "fmnist-vit", shapes_zip, "", 0)
    assert images["visible"] and not text["visible"]
    assert "shapes.zip" in note["value"] and "circle, square" in note["value"]
    assert share["visible"] and "cannot carry" in share["value"]
    assert user == {"name": "shapes.zip", "kind": "images", "classes": ["circle", "square"]}
    assert "shapes.zip" in accordion["label"]

    bad = make_zip(tmp_path / "one.zip", {"only/1.png": shape_png("circle", np.random.default_rng(0))} | {
        "only/2.png": shape_png("circle", np.random.default_rng(1))})
    with pytest.warns(UserWarning):  # gr.Warning outside a request is a Python warning
        zip_value, _, _, _, note, share, user = own_data_view(lab, "fmnist-vit", bad, "", 0)
    assert zip_value is None and user is None and not share["visible"]
    assert "only one class" in note["value"]

    zip_value, _, _, _, note, share, user = own_data_view(lab, "fmnist-vit", None, "", 0)
    assert user is None and not note["visible"] and not share["visible"]  # back to the preset's data


def test_pasted_text_becomes_splits_and_bad_text_is_explained(tmp_path):
    from app.tab_train import own_data_view
    from app.lab import Lab
    from app.userdata import read_text_file

    lab = Lab()
    text = "\n%\n".join(f"Quote number {i}, with some words." for i in range(20))
    data = lab.user_data.resolve("text", None, text, seed=0)
    assert data.kind == "text" and len(data.splits.train) + len(data.splits.test) == 20
    assert "held out" in data.summary()
    blank_lines = "First poem.\nTwo lines.\n\nSecond poem.\n\nThird."
    assert len(lab.user_data.text(blank_lines).splits.train) == 2
    assert lab.user_data.resolve("text", None, "   \n", seed=0) is None  # empty box: the preset's data
    assert lab.user_data.resolve("vision", None, text, seed=0) is None  # text does not fit an image model
    with pytest.raises(ValueError, match="empty"):
        lab.user_data.text("")
    with pytest.raises(ValueError, match="single piece"):
        lab.user_data.text("just one quote")
    _, _, images, text_box, note, share, user = own_data_view(lab, "smollm2-135m", None, "just one quote", 0)
    assert text_box["visible"] and not images["visible"] and "cannot be used yet" in note["value"]
    binary = tmp_path / "image.txt"
    binary.write_bytes(b"\x89PNG\x00\x00")
    with pytest.raises(ValueError, match="does not look like a text file"):
        read_text_file(binary, 1_000_000)
    latin = tmp_path / "fortunes.txt"
    latin.write_bytes("Caf\xe9\n%\nNa\xefve".encode("latin-1"))
    assert read_text_file(latin, 1_000_000) == "Café\n%\nNaïve"


def test_the_gpu_call_takes_and_returns_plain_values_and_rebuilds_the_same_model(served, shapes_zip):
    """What ZeroGPU needs: picklable arguments in, picklable payloads out (no nn.Module),
    and enough in them to rebuild the tuned model exactly."""
    import torch

    from app.gpu import data_payload, gpu, train_stream
    from app.sessions import RunFlag, SavedRun, rebuild_tuned
    from symlora.lab.events import TrainEvent
    from symlora.lab.train import train

    lab = served[0].lab
    user = lab.user_data.images(shapes_zip, seed=0)
    config = lab.default_config().replace(steps=2, batch_size=16)
    args = pickle.loads(pickle.dumps((config.to_dict(), data_payload(user.splits), RunFlag().path)))
    payloads = list(train_stream(*args))
    for p in payloads:
        pickle.dumps(p)  # every streamed item crosses a process boundary
    final = TrainEvent.from_payload(payloads[-1]["event"])
    assert final.kind == "done" and final.result.classes == ["circle", "square"]
    assert final.result.config == config.to_dict()
    assert all(t.device.type == "cpu" for t in final.result.trainable_state.values())
    assert gpu(lambda: 1)() == 1 and gpu(duration=5)(lambda: 2)() == 2  # identity without `spaces`

    # The same run in this process, its model kept, against the model rebuilt from the payload.
    live = train(config, base=lab.bases.model(config.model), dataset=user.splits, keep_model=True).bundle
    saved = SavedRun.from_result("x", config, final.result, None, [])
    rebuilt = rebuild_tuned(saved, lab.bases.model(config.model))
    x = live.preprocess(user.splits.test.images)
    live_model = live.model.cpu()
    noise = rounding_noise(live_model, lambda m, dtype: m(x.to(dtype)))
    with torch.no_grad():
        assert_same_up_to_rounding(live_model(x), rebuilt.model(x), noise, "kept vs rebuilt tuned model")


def test_pause_step_and_stop_reach_the_training_loop_through_files():
    """The engine's stop check, as a forked ZeroGPU worker sees a RunFlag: files only."""
    import threading
    import time

    from app.sessions import RunFlag, control_check

    flag = RunFlag()
    check = control_check(flag.path, pause_limit_s=0.5)
    assert check() is False  # running
    flag.pause()
    assert flag.paused
    flag.step()
    assert check() is False  # one step allowed...
    t0 = time.perf_counter()
    threading.Timer(0.2, flag.resume).start()
    assert check() is False and time.perf_counter() - t0 >= 0.15  # ...then it waits until Resume
    flag.pause()
    t0 = time.perf_counter()
    assert check() is True and time.perf_counter() - t0 >= 0.5  # paused too long: stopped
    flag.resume()
    flag.set()
    assert check() is True and flag.is_set()
    flag.close()
    assert not Path(flag.path).exists()
    flag.set()  # after close: no files again
    assert not Path(flag.path).exists()


@pytest.mark.slow
def test_one_quote_per_line_trains_the_language_model_through_the_api(served, client):
    """/train with pasted text that has no blank or '%' lines: one piece per line, and the
    status says which splitting was used."""
    demo, _ = served
    values = train_args(demo, "fortunes", steps=2, batch_size=4)
    text = "\n".join(f"Captain's log {i}: all quiet on deck {i % 4}." for i in range(14))
    updates = list(client.submit(*values, data_text=text, api_name="/train"))
    assert any("12 pieces of text for training / 2 held out" in u[0] and "one piece per line" in u[0]
               for u in updates), [u[0] for u in updates][:3]
    final = final_event(updates)
    assert final["kind"] == "done" and final["result"]["metric_name"] == "perplexity", final
    assert "your text" in updates[-1][0]
