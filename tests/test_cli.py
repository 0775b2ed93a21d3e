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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--steps", "0"], "must be at least 1"),
        (["train", "--preset", "nope"], "unknown preset"),
        (["train", "--method", "dora"], "invalid choice"),
        (["train", "--lr", "abc"], "expected a number"),
        (["compare", "--methods", "lora,dora"], "unknown method"),
        (["predict", "--run", "/nonexistent", "--image", "x.png"], "not a run folder"),
    ],
)
def test_bad_arguments_exit_2_without_a_traceback(args, message):
    res = symlora(*args)
    assert res.returncode == 2
    assert message in res.stderr
    assert "Traceback" not in res.stderr
