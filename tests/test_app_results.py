"""The Learn tab's benchmark table is read from the shipped results file, honestly worded."""

from __future__ import annotations

import json

from app.learn import RESULTS_FILE, every_configuration, results_markdown


def row(task, label, metric, params, name="accuracy"):
    return {"task": task, "label": label, "metric_name": name, "metric_mean": metric, "metric_std": 0.01,
            "trainable_params": params}


def test_table_and_differences_come_from_the_file(tmp_path):
    path = tmp_path / "claim.json"
    summary = [row("digits", "lora r=8", 0.95, 1000), row("digits", "symlora r=8", 0.93, 600),
               row("digits", "symlora r=12 (budget of lora r=8)", 0.96, 1005),
               row("fortunes", "lora r=8", 30.0, 500, "perplexity"), row("fortunes", "symlora r=8", 32.0, 250, "perplexity")]
    path.write_text(json.dumps({"meta": {"hardware": "test CPU"}, "summary": summary, "runs": []}))
    text = results_markdown(path)
    assert "| digits | symlora r=8 | accuracy 93.0 % ± 1.0 pt | 600 |" in every_configuration(path)
    assert "SymLoRA − LoRA = −2.0 pt with 60% of the weights" in text, "a loss is shown as a loss, in points"
    assert "(symlora r=12) +1.0 pt" in text
    assert "SymLoRA − LoRA = −2.0 with" in text, "higher perplexity counts against SymLoRA"
    assert "test CPU" in text


def test_paired_differences_are_shown_with_their_spread(tmp_path):
    path = tmp_path / "claim.json"
    summary = [row("fortunes", "lora r=8", 30.0, 500, "perplexity"), row("fortunes", "symlora r=8", 32.0, 250, "perplexity")]
    diffs = [{"task": "fortunes", "r": 8, "metric_name": "perplexity", "budget_label": "symlora r=16 (budget of lora r=8)",
              "equal_rank": {"diff_mean": 2.0, "diff_std": 0.5, "seeds": 3, "param_ratio": 0.5},
              "equal_budget": {"diff_mean": -1.0, "diff_std": 0.25, "seeds": 3, "param_ratio": 1.002}}]
    path.write_text(json.dumps({"meta": {"hardware": "test CPU", "tasks": {"fortunes": "SmolLM2 → quotes"}},
                                "summary": summary, "differences": diffs, "runs": []}))
    text = results_markdown(path)
    assert "| fortunes | 8 | −2.0 ± 0.5 (50% weights) | +1.0 ± 0.2 (r=16 · 100% weights) |" in text
    assert "**fortunes**: SmolLM2 → quotes" in text
    assert "| fortunes | symlora r=8 | perplexity 32.00 ± 0.01 | 250 |" in every_configuration(path)


def test_missing_file_says_how_to_make_it(tmp_path):
    assert "bench/claim.py" in results_markdown(tmp_path / "none.json")


def test_the_shipped_file_renders():
    if RESULTS_FILE.is_file():
        assert "SymLoRA − LoRA" in results_markdown()


def test_fair_files_show_steps_each_methods_rate_and_the_target(tmp_path):
    from app.learn import short_lr

    path = tmp_path / "claim.json"
    summary = [dict(row("fortunes", "lora r=8", 21.0, 500, "perplexity"), steps=12, chosen_lr=1e-2, grid=[5e-3, 1e-2, 2e-2]),
               dict(row("fortunes", "symlora r=8", 21.5, 250, "perplexity"), steps=12, chosen_lr=2e-2, grid=[5e-3, 1e-2, 2e-2])]
    diffs = [{"task": "fortunes", "steps": 12, "r": 8, "metric_name": "perplexity", "budget_label": "symlora r=8",
              "lora_lr": 1e-2, "equal_rank": {"diff_mean": 0.5, "diff_std": 0.1, "relative": 0.5 / 21.0, "seeds": 3,
                                              "meets_target": True, "symlora_lr": 2e-2, "param_ratio": 0.5},
              "equal_budget": None}]
    path.write_text(json.dumps({"meta": {"hardware": "test GPU", "protocol": {"seeds": 3}}, "summary": summary,
                                "differences": diffs, "runs": []}))
    text = results_markdown(path)
    assert "| fortunes | 12 | 8 (1e-2) | −0.5 ± 0.1 (−2.4 %) ✓ (2e-2, 50%) | — |" in text
    assert "its own best learning rate" in text
    assert "| fortunes | 12 | symlora r=8 | 0.005 … 0.02 (3) | 0.02 | perplexity 21.50 ± 0.01 | 250 |" in every_configuration(path)
    assert [short_lr(x) for x in (2.5e-4, 8e-3, 1e-2, 1.25e-3)] == ["2.5e-4", "8e-3", "1e-2", "1.25e-3"]
