"""The fair race (bench/claim.py): validation carved from the training data, the learning
rate chosen on it alone, the test split scored only at the chosen rate, all of it recorded."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch

from conftest import load_bench


@pytest.fixture(scope="module")
def claim():
    return load_bench("claim")


def _images(n_per_class: int, classes: int, offset: int = 0):
    from symlora.lab.data import ImageDataset

    labels = torch.arange(classes).repeat_interleave(n_per_class)
    images = (torch.arange(len(labels)) + offset).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 2, 2, 1).clone()
    return ImageDataset(images, labels, [str(c) for c in range(classes)])


def test_validation_is_carved_from_the_training_data_per_class(claim):
    from symlora.lab.data import ImageSplits

    splits = ImageSplits("toy", _images(10, 3), _images(4, 3, offset=100), "test data")
    tuning, final = claim.carve_validation(splits, 0.2, seed=1)
    train_ids = set(splits.train.images[:, 0, 0, 0].tolist())
    val_ids = set(tuning.test.images[:, 0, 0, 0].tolist())
    rest_ids = set(tuning.train.images[:, 0, 0, 0].tolist())
    assert val_ids <= train_ids and rest_ids <= train_ids and not val_ids & rest_ids
    assert len(val_ids) + len(rest_ids) == len(train_ids)
    assert tuning.test.labels.bincount().tolist() == [2, 2, 2], "20 % of every class"
    assert final.test is splits.test and torch.equal(final.train.images, tuning.train.images)


def test_text_validation_keeps_the_test_documents_out(claim):
    from symlora.lab.data import TextSplits

    splits = TextSplits("toy", [f"train {i}" for i in range(20)], ["test a", "test b"], "test data")
    tuning, final = claim.carve_validation(splits, 0.25, seed=0)
    assert len(tuning.test) == 5 and set(tuning.test) | set(tuning.train) == set(splits.train)
    assert not set(tuning.test) & set(tuning.train)
    assert final.test == splits.test and final.train == tuning.train


def _run(lr, seed, metric, name="accuracy", split="validation"):
    return {"lr": lr, "seed": seed, "metric": metric, "metric_name": name, "split": split}


def test_the_chosen_rate_has_the_best_mean_validation_score(claim):
    runs = [_run(1e-3, 0, 0.80), _run(1e-3, 1, 0.82), _run(1e-2, 0, 0.90), _run(1e-2, 1, 0.70),
            _run(1e-1, 0, 0.85), _run(1e-1, 1, None)]  # a diverged run makes its rate the worst
    best, means = claim.choose_lr(runs)
    assert best == 1e-3 and means[1e-2] == pytest.approx(0.80) and means[1e-1] is None
    ppl = [_run(1e-3, 0, 40.0, "perplexity"), _run(1e-2, 0, 20.0, "perplexity"), _run(1e-1, 0, 30.0, "perplexity")]
    assert claim.choose_lr(ppl)[0] == 1e-2, "lower perplexity is better"
    with pytest.raises(ValueError, match="validation runs only"):
        claim.choose_lr(runs + [_run(1e-3, 0, 0.99, split="test")])


def test_grids_are_log_spaced_and_wide(claim):
    for task in claim.TASKS.values():
        lrs = task.lrs
        assert len(lrs) >= 5 and lrs[-1] / lrs[0] >= 32, task.name
        ratios = [b / a for a, b in zip(lrs, lrs[1:])]
        assert max(ratios) / min(ratios) < 1.01, task.name


@pytest.mark.slow
def test_tiny_race_chooses_on_validation_and_scores_test_only_at_the_choice(claim, tmp_path, monkeypatch):
    """fmnist-vit few-shot, 2 steps, 1 seed, a 3-point grid on the CPU: every run the engine
    is given is recorded with the data it is scored on."""
    from symlora.lab.data import load_dataset

    submitted = []

    class Recording(claim.Engine):
        def submit(self, config, **kw):
            submitted.append((config.lr, kw["dataset"]))
            return super().submit(config, **kw)

    monkeypatch.setattr(claim, "Engine", Recording)
    out = tmp_path / "claim.json"
    assert claim.main(["--tasks", "fewshot", "--device", "cpu", "--seeds", "1", "--steps", "2", "--scales", "1",
                       "--ranks", "2", "--lrs", "1e-4,1e-3,1e-2", "--widen", "1", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    real = load_dataset("fmnist-fewshot", seed=0)
    test_images = {bytes(x.numpy()) for x in real.test.images}
    train_images = {bytes(x.numpy()) for x in real.train.images}

    summary = {s["label"]: s for s in results["summary"]}
    assert set(summary) == {"lora r=2", "symlora r=2", "symlora r=3 (budget of lora r=2)"}
    for label, s in summary.items():
        val = [r for r in results["runs"] if r["label"] == label and r["split"] == "validation"]
        means = {r["lr"]: r["metric"] for r in val}
        assert sorted(means) == s["grid"] and len(s["grid"]) >= 3
        assert s["chosen_lr"] == max(sorted(means), key=lambda lr: -math.inf if means[lr] is None else means[lr])
        tests = [r for r in results["runs"] if r["label"] == label and r["split"] == "test"]
        assert [r["lr"] for r in tests] == [s["chosen_lr"]] and s["metric_mean"] == tests[0]["metric"]
    assert results["meta"]["protocol"]["grids"] == {"fewshot": [1e-4, 1e-3, 1e-2]}

    seen_test = False
    for _, data in submitted:
        scored = {bytes(x.numpy()) for x in data.test.images}
        if scored == test_images:
            seen_test = True
        else:  # a tuning run: scored on images from the training split, never from the test split
            assert not seen_test, "every validation run is submitted before any test run"
            assert scored <= train_images and not scored & test_images
        assert not {bytes(x.numpy()) for x in data.train.images} & scored, "never scored on its own training images"
    assert sum(1 for _, d in submitted if {bytes(x.numpy()) for x in d.test.images} == test_images) == 3

    (diff,) = results["differences"]
    assert diff["r"] == 2 and diff["equal_rank"]["param_ratio"] < 0.75 and abs(diff["equal_budget"]["param_ratio"] - 1) < 0.01
    assert diff["equal_rank"]["symlora_lr"] == summary["symlora r=2"]["chosen_lr"]
    table = out.with_suffix(".md").read_text()
    assert "| fewshot | 2 | lora r=2 | 0.0001 (" in table


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


def test_shards_give_symlora_equal_rank_and_equal_budget_a_process_each(claim):
    """``--jobs``: per task and step scale, LoRA, SymLoRA at LoRA's rank and SymLoRA at LoRA's
    budget are three processes (equal work side by side); ``--no-budget`` drops the third."""
    args = argparse.Namespace(
        tasks="fmnist-cnn", scales="1,3", methods=None, seeds=3, device="cuda", ranks="8", widen=2, val_fraction=0.2,
        steps=None, lrs=None, data_cache=None, sweep_seeds=None, max_runs=8, minilm_dir=None, lambda_lr_ratio=None,
        symlora_init=None, init_scale=None, no_budget=False, budget_only=False)
    shards = claim.shard_args(args)
    kinds = [(s[s.index("--scales") + 1], s[s.index("--methods") + 1], "--no-budget" in s, "--budget-only" in s)
             for s in shards]
    assert kinds == [(scale, m, nb, bo) for scale in ("1", "3")
                     for m, nb, bo in (("lora", False, False), ("symlora", True, False), ("symlora", False, True))]
    assert all("--max-runs=8" in s for s in shards)
    args.no_budget = True
    assert not any("--budget-only" in s for s in claim.shard_args(args)) and len(claim.shard_args(args)) == 4
