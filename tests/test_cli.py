"""The ``symlora`` command line, run as a user runs it: a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def symlora(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "symlora", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={"OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"})


def test_presets_json_lists_offline_and_online_presets():
    out = symlora("presets", "--json")
    assert out.returncode == 0, out.stderr
    presets = json.loads(out.stdout)
    by_name = {p["name"]: p for p in presets}
    assert {"digits", "fortunes"} <= set(by_name)
    for p in presets:
        assert {"name", "task", "model", "data", "needs_internet", "description"} <= set(p)
        assert p["task"] in ("vision", "text")
    assert by_name["digits"]["needs_internet"] is False
    assert any(p["needs_internet"] for p in presets), "hub presets are listed, marked as online"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    res = symlora("train", "--preset", "digits", "--steps", "30", "--seed", "1", "--device", "cpu", "--json", "--out", str(out))
    assert res.returncode == 0, res.stderr
    return out, [json.loads(line) for line in res.stdout.splitlines()]


@pytest.mark.slow
def test_train_json_streams_events_and_ends_with_a_summary(run_dir):
    out, lines = run_dir
    events, summary = lines[:-1], lines[-1]
    assert len(events) >= 3 and events[0]["kind"] == "start"
    assert all("loss" in e and "memory" in e for e in events)
    for key in ("method", "trainable_params", "total_params", "metric_name", "metric_before", "metric_after", "wall_s", "peak_mem_bytes"):
        assert key in summary
    assert summary["method"] == "symlora" and summary["metric_name"] == "accuracy"
    assert summary["metric_after"] > summary["metric_before"] + 0.2
    for name in ("run.json", "metrics.jsonl", "adapter_config.json", "adapter_model.safetensors"):
        assert (out / name).is_file(), name


@pytest.mark.slow
def test_predict_and_export_from_a_saved_run(run_dir, tmp_path):
    out, _ = run_dir
    image = sorted((ROOT / "assets" / "examples").glob("*.png"))[0]
    res = symlora("predict", "--run", str(out), "--image", str(image), "--json")
    assert res.returncode == 0, res.stderr
    top = json.loads(res.stdout)
    assert len(top) == 5 and all(r["label"] in [str(d) for d in range(10)] for r in top)
    probs = [r["prob"] for r in top]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    assert top[0]["label"] == image.stem.split("-")[-1], "a tuned model reads a clean example digit"
    res = symlora("export-peft", "--run", str(out), "--out", str(tmp_path / "peft"))
    assert res.returncode == 0, res.stderr
    cfg = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA"


def test_lora_dropout_from_the_command_line_reaches_the_adapter_layers(tmp_path):
    """``--lora-dropout`` is a run setting like ``--r``: it is saved with the adapter and the
    layers of the rebuilt model drop out at that rate."""
    from torch import nn

    from symlora.lab.runs import load_run
    from symlora.model import adapter_layers

    out = tmp_path / "run"
    res = symlora("train", "--preset", "digits", "--steps", "2", "--batch-size", "8", "--lora-dropout", "0.25",
                  "--device", "cpu", "--json", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "adapter_config.json").read_text())["lora_dropout"] == 0.25
    assert json.loads((out / "run.json").read_text())["config"]["adapter"]["lora_dropout"] == 0.25
    layers = [layer for _, layer in adapter_layers(load_run(out).model)]
    assert layers and all(isinstance(m.lora_dropout, nn.Dropout) and m.lora_dropout.p == 0.25 for m in layers)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--steps", "0"], "must be at least 1"),
        (["train", "--preset", "nope"], "unknown preset"),
        (["train", "--method", "dora"], "invalid choice"),
        (["train", "--lr", "abc"], "expected a number"),
        (["train", "--lora-dropout", "1.5"], "symlora: error: lora_dropout must be in [0, 1), got 1.5\n"),
        (["train", "--r", "5000"], "symlora: error: r must be a whole number from 1 to 4,096, got 5000\n"),
        (["compare", "--methods", "lora,dora"], "unknown method"),
        (["predict", "--run", "/nonexistent", "--image", "x.png"], "not a run folder"),
    ],
)
def test_bad_arguments_exit_2_without_a_traceback(args, message):
    res = symlora(*args)
    assert res.returncode == 2
    assert message in res.stderr
    assert "Traceback" not in res.stderr


# --------------------------------------------------------------------------- your own data
def write_shapes_zip(path: Path, per_class: int = 8) -> Path:
    """A zip of dark-on-light circles and crosses, one folder per class (as people make them)."""
    import io
    import zipfile

    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as zf:
        for kind in ("circle", "cross"):
            for i in range(per_class):
                im = Image.new("RGB", (36, 36), (250, 250, 245))
                draw = ImageDraw.Draw(im)
                r = int(rng.integers(8, 13))
                cx, cy = (int(v) for v in rng.integers(r + 2, 34 - r, size=2))
                if kind == "circle":
                    draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=(20, 20, 20), width=3)
                else:
                    draw.line([cx - r, cy - r, cx + r, cy + r], fill=(20, 20, 20), width=3)
                    draw.line([cx - r, cy + r, cx + r, cy - r], fill=(20, 20, 20), width=3)
                buf = io.BytesIO()
                im.save(buf, "PNG")
                zf.writestr(f"shapes/{kind}/{i}.png", buf.getvalue())
    return path


@pytest.mark.slow
def test_train_on_your_own_zip_predicts_and_exports_its_classes(tmp_path):
    shapes = write_shapes_zip(tmp_path / "my-shapes.zip")
    out = tmp_path / "run"
    res = symlora("train", "--data", str(shapes), "--steps", "4", "--batch-size", "8", "--device", "cpu",
                  "--json", "--out", str(out))
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout.splitlines()[-1])
    assert summary["data_name"] == "my-shapes.zip" and summary["metric_name"] == "accuracy"
    run = json.loads((out / "run.json").read_text())
    assert run["classes"] == ["circle", "cross"] and run["data_name"] == "my-shapes.zip"
    picture = tmp_path / "circle.png"
    import zipfile

    with zipfile.ZipFile(shapes) as zf:
        picture.write_bytes(zf.read("shapes/circle/0.png"))
    res = symlora("predict", "--run", str(out), "--image", str(picture), "--json")
    assert res.returncode == 0, res.stderr
    assert {row["label"] for row in json.loads(res.stdout)} == {"circle", "cross"}
    res = symlora("export-peft", "--run", str(out), "--out", str(tmp_path / "peft"))
    assert res.returncode == 0, res.stderr
    card = (tmp_path / "peft" / "README.md").read_text()
    assert "| 0 | circle |" in card and "my-shapes.zip" in card
    assert json.loads((tmp_path / "peft" / "adapter_config.json").read_text())["base_model_name_or_path"] == "fmnist-vit"


@pytest.mark.parametrize("make, args, message", [
    (lambda d: (d / "x.zip").write_text("hello"), ["--data", "{d}/x.zip"], "x.zip is not a zip file"),
    (lambda d: None, ["--data", "{d}/gone.zip"], "gone.zip: file not found"),
    (lambda d: write_shapes_zip(d / "s.zip"), ["--preset", "fortunes", "--data", "{d}/s.zip"], "--data takes images"),
    (lambda d: (d / "one.txt").write_text("just one line, nothing else\n"), ["--preset", "fortunes", "--text",
                                                                             "{d}/one.txt"], "single piece"),
])
def test_bad_own_data_exits_2_with_one_line(tmp_path, make, args, message):
    make(tmp_path)
    res = symlora("train", *[a.format(d=tmp_path) for a in args], "--steps", "1", timeout=120)
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("symlora: error:") and message in lines[0], res.stderr


@pytest.mark.slow
def test_train_on_one_quote_per_line(tmp_path):
    """A .txt with one quote per line (no blank or '%' lines) trains the language model."""
    quotes = tmp_path / "quotes.txt"
    quotes.write_text("\n".join(f"Captain's log {i}: all is quiet on deck {i % 4}." for i in range(14)) + "\n")
    res = symlora("train", "--preset", "fortunes", "--text", str(quotes), "--steps", "2", "--batch-size", "4",
                  "--device", "cpu", "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout.splitlines()[-1])
    assert summary["data_name"] == "quotes.txt" and summary["metric_name"] == "perplexity"
    assert summary["metric_after"] < summary["metric_before"]
