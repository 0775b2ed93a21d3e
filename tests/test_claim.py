"""The claim benchmark's grid runner, on a 2-step, 1-seed smoke configuration."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def claim():
    spec = importlib.util.spec_from_file_location("claim", ROOT / "bench" / "claim.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["claim"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_smoke_grid_writes_a_well_formed_results_file(claim, tmp_path):
    out = tmp_path / "claim.json"
    assert claim.main(["--smoke", "--tasks", "fewshot", "--device", "cpu", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert {"meta", "summary", "runs"} <= set(results)
    labels = {s["label"] for s in results["summary"]}
    assert {"head-only", "full", "lora r=2", "symlora r=2"} <= labels
    assert any(label.startswith("symlora r=3 (budget of lora r=2)") for label in labels)
    for run in results["runs"]:
        assert run["steps_done"] == 2 and run["metric_name"] == "accuracy"
        assert 0.0 <= run["metric_after"] <= 1.0
    lora = next(r for r in results["runs"] if r["label"] == "lora r=2")
    assert all(0.0 <= f <= 1.0 for f in lora["symmetric_fraction"].values()) and lora["symmetric_fraction"]
    table = out.with_suffix(".md").read_text()
    assert "| fewshot | symlora r=2 |" in table
    (diff,) = results["differences"]  # SymLoRA − LoRA, paired by seed
    assert diff["r"] == 2 and diff["equal_rank"]["param_ratio"] < 0.75 and abs(diff["equal_budget"]["param_ratio"] - 1) < 0.01
    by_label = {r["label"]: r["metric_after"] for r in results["runs"]}
    assert diff["equal_rank"]["diff_mean"] == pytest.approx(by_label["symlora r=2"] - by_label["lora r=2"])


@pytest.mark.slow
def test_sharded_grid_runs_every_configuration_once(claim, tmp_path):
    out = tmp_path / "claim.json"
    assert claim.main(["--smoke", "--tasks", "fewshot", "--device", "cpu", "--jobs", "2", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["meta"]["complete"] and len(results["meta"]["shards"]) == 2  # head-only/full, and rank 2
    assert sorted(r["label"] for r in results["runs"]) == sorted(
        ["head-only", "full", "lora r=2", "symlora r=2", "symlora r=3 (budget of lora r=2)"])


@pytest.mark.parametrize("r", [2, 8])
def test_equal_budget_pairing_matches_parameter_counts_within_one_percent(claim, r):
    from symlora.lab.data import load_dataset
    from symlora.lab.runconfig import RunConfig
    from symlora.lab.zoo import load_model

    base = load_model("fmnist-vit")
    data = load_dataset("mnist-5k")
    cfg = RunConfig.from_preset("digits", device="cpu")
    rb, ratio = claim.budget_rank(base, cfg, r, data)
    assert abs(ratio - 1) < 0.01
    assert rb > r, "SymLoRA needs a higher rank for the same budget"
