"""The speed benchmark's plumbing on a CPU: every configuration, one JSON object each."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("peft")


@pytest.mark.slow
def test_json_has_one_object_per_configuration_with_the_promised_keys(capsys):
    spec = importlib.util.spec_from_file_location("adapter_speed", ROOT / "bench" / "adapter_speed.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules["adapter_speed"] = bench
    spec.loader.exec_module(bench)
    bench.main(["--tiny", "--device", "cpu", "--steps", "1", "--warmup", "0", "--json",
                "--methods", "floor,full,peft-lora,lora,symlora"])
    out = capsys.readouterr().out
    rows = json.loads(out[out.index("["):])
    train = {r["method"]: r for r in rows if r["phase"] == "train"}
    assert set(train) == {"floor", "full", "peft-lora", "lora", "symlora"}
    for row in rows:
        assert {"model", "method", "compiled", "step_ms", "ratio_to_floor", "ratio_to_peft", "peak_mem_bytes",
                "trainable_params"} <= set(row)
        assert row["step_ms"] > 0
    assert train["floor"]["ratio_to_floor"] == 1.0 and train["peft-lora"]["ratio_to_peft"] == 1.0
    assert train["floor"]["trainable_params"] == 0
    assert train["symlora"]["trainable_params"] < train["lora"]["trainable_params"] == train["peft-lora"]["trainable_params"]
    assert {"base", "symlora-merged"} <= {r["method"] for r in rows if r["phase"] == "infer"}
