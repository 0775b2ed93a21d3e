"""The speed benchmark's plumbing on a CPU: every configuration, one JSON object each."""

from __future__ import annotations

import json
import sys

import pytest

from conftest import load_bench

pytest.importorskip("peft")


@pytest.mark.slow
def test_json_has_one_object_per_configuration_with_the_promised_keys(capsys):
    bench = load_bench("adapter_speed")
    bench.main(["--tiny", "--device", "cpu", "--steps", "1", "--warmup", "0", "--repeats", "3", "--json",
                "--models", "vit-b16,vit-b16-all", "--methods", "floor,full,peft-lora,lora,symlora"])
    out = capsys.readouterr().out
    rows = json.loads(out[out.index("["):])
    train = {r["method"]: r for r in rows if r["phase"] == "train" and r["model"] == "vit-tiny"}
    four = {r["method"]: r for r in rows if r["phase"] == "train" and r["model"] == "vit-tiny-all"}
    assert set(train) == {"floor", "full", "peft-lora", "lora", "symlora"}
    for row in rows:
        assert {"model", "method", "compiled", "step_ms", "step_ms_min", "repeat_ms", "ratio_to_floor",
                "ratio_to_peft", "peak_mem_bytes", "peak_reserved_bytes", "trainable_params", "adapted_layers",
                "timing", "profile"} <= set(row)
        assert row["step_ms"] > 0 and len(row["repeat_ms"]) == 3 and row["step_ms_min"] <= row["step_ms"]
        assert "interleaved" in row["timing"]  # the default on a CPU, and the table says so
        if row["phase"] == "train":  # operators per step, from the profiler
            assert row["profile"]["aten_ops_per_step"] > 0
    # adapters on qkv, proj, fc1 and fc2 of both blocks: twice the layers of attention alone
    assert four["symlora"]["adapted_layers"] == 2 * train["symlora"]["adapted_layers"] == 8
    assert four["peft-lora"]["adapted_layers"] == four["lora"]["adapted_layers"] == 8
    assert train["symlora"]["profile"]["aten_ops_per_step"] > train["floor"]["profile"]["aten_ops_per_step"]
    assert train["floor"]["ratio_to_floor"] == 1.0 and train["peft-lora"]["ratio_to_peft"] == 1.0
    assert train["floor"]["trainable_params"] == 0
    assert train["symlora"]["trainable_params"] < train["lora"]["trainable_params"] == train["peft-lora"]["trainable_params"]
    assert {"base", "symlora-merged"} <= {r["method"] for r in rows if r["phase"] == "infer"}


@pytest.mark.slow
def test_against_a_revision_adds_its_rows_timed_with_this_checkouts(capsys):
    """``--against REV``: SymLoRA and LoRA from REV's core, in the same run as this checkout's."""
    bench = load_bench("adapter_speed")
    bench.main(["--tiny", "--device", "cpu", "--steps", "1", "--warmup", "0", "--repeats", "1", "--json",
                "--models", "vit-b16", "--methods", "floor,symlora", "--no-infer", "--profile", "none",
                "--against", "HEAD"])
    out = capsys.readouterr().out
    rows = {(r["method"], r["variant"]): r for r in json.loads(out[out.index("["):])}
    assert set(rows) == {("floor", "default"), ("symlora", "default"), ("symlora", "@HEAD")}
    ref, new = rows["symlora", "@HEAD"], rows["symlora", "default"]
    assert sys.modules["symlora_ref"].__name__ == "symlora_ref"  # the revision's core, not this one's
    assert ref["adapted_layers"] == new["adapted_layers"] == 4  # qkv and proj of both blocks
    assert ref["trainable_params"] == new["trainable_params"]
    assert ref["ratio_to_floor"] > 0 and ref["timing"] == new["timing"]


def test_cpu_breakdown_times_each_layer_inside_the_step_and_restores_the_core(capsys):
    """``cpu_breakdown.py --pieces`` wraps the fast path's functions with timers for its run
    only (the library must be itself again afterwards); ``--layers`` gives every adapted
    layer kind a forward and a backward time for the floor, SymLoRA and LoRA."""
    pytest.importorskip("timm")
    from symlora import fast

    breakdown = load_bench("cpu_breakdown")
    core = (fast.project, fast.fold_weight, fast.factor_grad_t, fast._SymLoraLinear.forward,
            fast._SymLoraLinear.backward)
    breakdown.main(["--pieces", "--rounds", "1"])
    out = capsys.readouterr().out
    for phase in ("fwd", "bwd"):
        for features in (576, 192):  # the ViT's qkv and proj
            assert f"{phase} {features:4d} node in all" in out and f"{phase} {features:4d} fold_weight" in out
    assert "bwd  576 factor_grad_t (accumulating)" in out
    assert (fast.project, fast.fold_weight, fast.factor_grad_t, fast._SymLoraLinear.forward,
            fast._SymLoraLinear.backward) == core

    breakdown.main(["--layers", "--rounds", "1"])
    rows = {line.split()[0]: line.split()[2:] for line in capsys.readouterr().out.splitlines()
            if line.split()[:2] in (["floor", "default"], ["symlora", "default"], ["lora", "default"])}
    assert set(rows) == {"floor", "symlora", "lora"}
    for cells in rows.values():  # step ms, ×floor, then µs: fwd qkv, bwd qkv, fwd proj, bwd proj
        assert len(cells) == 6 and all(float(c) > 0 for c in cells)
