"""Does SymLoRA keep up with LoRA on half the weights?  A fair race on our own tasks.

The protocol, per task, step count, method and rank:

1. **Validation carved from the training data.**  Each seed's training split is cut into a
   stratified 80 % that trains and a 20 % that validates (:func:`carve_validation`); the
   test split is not touched while choosing.
2. **A learning-rate sweep** over a log-spaced grid (7 values, ×2 apart, by default); each
   grid point trains the seeds on the 80 % and is scored on the validation 20 %.  If the
   best lies on an edge of the grid, the grid grows one point past that edge (up to
   ``--widen`` times) so that the optimum is inside it.
3. **The chosen learning rate** (best mean validation score over the seeds; a diverged run
   scores worst) trains the same seeds on the same 80 % once more, scored on the **test**
   split: the numbers reported.
4. LoRA and SymLoRA at **equal rank** and at **equal parameter budget** (SymLoRA at the rank
   whose trainable count is closest to LoRA's: 2r on square layers), each at its own best
   learning rate, at the app's step count and ``--scales`` times it (3× by default).

    python bench/claim.py --tasks digits,fewshot,fmnist-cnn,fortunes,topics --device cuda --jobs 10
    python bench/claim.py --tasks digits --device cpu --seeds 1 --lrs 1e-3,1e-2 --steps 4   # a quick look
    python bench/claim.py --merge A.json B.json --out assets/results/claim.json

Runs go through :class:`symlora.lab.engine.Engine`: on a GPU the runs of one adapter layout
(every learning rate and seed of a method) train together in one stacked step.  Writes a
JSON file (meta with the protocol, per-configuration summary with grid, validation scores,
chosen learning rate and test mean ± std, SymLoRA − LoRA differences paired by seed, every
run) and a Markdown table next to it.  ``--jobs N`` runs the tasks as N processes side by
side; step times are not speed measurements (``bench/adapter_speed.py`` is).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import symlora  # noqa: E402
from symlora.blocks import BlockLayout, rank_for_budget, total_params  # noqa: E402
from symlora.lab.data import (  # noqa: E402
    FASHION_MNIST_CLASSES,
    ImageSplits,
    TextSplits,
    TopicSplits,
    load_dataset,
)
from symlora.lab.engine import Engine  # noqa: E402
from symlora.lab.runconfig import RunConfig  # noqa: E402
from symlora.lab.train import pick_device, prepare  # noqa: E402
from symlora.lab.zoo import load_model  # noqa: E402

log = logging.getLogger("claim")
logging.getLogger("symlora").setLevel(logging.WARNING)  # one line per injected model is noise here

Splits = ImageSplits | TextSplits | TopicSplits
METHODS = ("lora", "symlora")


def log_grid(lo: float, ratio: float, n: int) -> tuple[float, ...]:
    """``n`` learning rates from ``lo``, each ``ratio`` times the last (3 significant digits)."""
    return tuple(float(f"{lo * ratio ** k:.3g}") for k in range(n))


@dataclass(frozen=True)
class Task:
    """A benchmark task: a preset plus the data, schedule and learning-rate grid the race uses.

    ``steps`` is the app's step count for it; ``overrides`` are RunConfig fields that differ
    from the preset (a model that has no preset of its own)."""

    name: str
    preset: str
    data: str
    steps: int
    batch_size: int
    lrs: tuple[float, ...]
    description: str = ""
    data_kwargs: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)


VISION_GRID = log_grid(5e-4, 2, 7)  # 5e-4 … 3.2e-2
TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("digits", "digits", "mnist-5k", steps=100, batch_size=64, lrs=VISION_GRID,
             description="the Fashion-MNIST ViT → MNIST digits (3,200 train / 800 validation / 1,000 test), attn.qkv + attn.proj"),
        Task("fewshot", "digits", "fmnist-fewshot", steps=100, batch_size=32, lrs=VISION_GRID,
             description="the Fashion-MNIST ViT → 4 look-alike garments, 20 shots each (16 train / 4 validation), "
                         "from images it never saw; 800 test images"),
        Task("fmnist-cnn", "efficientnet-digits", "fmnist-fewshot", steps=60, batch_size=64, lrs=VISION_GRID,
             description="EfficientNet-Lite0 (ImageNet) → Fashion-MNIST, 10 classes × 100 shots (80 train / 20 validation), "
                         "64 px, adapters on the 1×1 convolutions; 2,000 test images",
             data_kwargs=dict(shots=100, classes=tuple(FASHION_MNIST_CLASSES), test_per_class=200)),
        Task("fortunes", "fortunes", "fortunes:startrek", steps=12, batch_size=8, lrs=log_grid(1.25e-3, 2, 7),
             description="SmolLM2-135M → Star Trek quotes, q_proj + o_proj, held-out perplexity (lower is better)"),
        Task("fortunes-science", "fortunes", "fortunes:science", steps=12, batch_size=8, lrs=log_grid(1.25e-3, 2, 7),
             description="SmolLM2-135M → science quotes, q_proj + o_proj, held-out perplexity (lower is better)"),
        Task("topics", "digits", "fortune-topics", steps=100, batch_size=16, lrs=log_grid(2.5e-4, 2, 7),
             description="all-MiniLM-L6-v2 (mean-pooled + linear head) → which of 5 fortunes categories a quotation "
                         "is from (112 train / 28 validation / 40 test per category), adapters on query + value (384×384)",
             overrides=dict(model="minilm-l6", target_modules=["query", "value"], max_tokens=64)),
    )
}


# --------------------------------------------------------------------------- validation split
def _stratified_holdout(labels: torch.Tensor, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(keep, held out): ``fraction`` of each class (at least one, never all) held out."""
    rng = np.random.default_rng(seed)
    keep, held = [], []
    y = labels.numpy()
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n = min(max(1, int(round(fraction * len(idx)))), len(idx) - 1)
        held += idx[:n].tolist()
        keep += idx[n:].tolist()
    return sorted(keep), sorted(held)


def carve_validation(splits: Splits, fraction: float = 0.2, seed: int = 0) -> tuple[Splits, Splits]:
    """Cut a validation set out of the *training* data: (tuning, final).

    ``tuning`` trains on the rest and is scored on the validation part (its ``test`` is
    the validation set); ``final`` trains on the same rest and is scored on the real test
    split.  Labelled data is held out per class; text documents at random."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the validation fraction must be in (0, 1), got {fraction}")
    if isinstance(splits, TextSplits):
        order = np.random.default_rng(seed).permutation(len(splits.train))
        n = min(max(1, int(round(fraction * len(order)))), len(order) - 1)
        held, keep = sorted(order[:n].tolist()), sorted(order[n:].tolist())
        rest = [splits.train[i] for i in keep]
        val = [splits.train[i] for i in held]
        return replace(splits, train=rest, test=val), replace(splits, train=rest)
    keep, held = _stratified_holdout(splits.train.labels, fraction, seed)
    rest, val = splits.train.subset(keep), splits.train.subset(held)
    return replace(splits, train=rest, test=val), replace(splits, train=rest)


def adapted(base, task_cfg: RunConfig, method: str, r: int, dataset) -> tuple[list[BlockLayout], int]:
    """The layers ``method`` adapts in this task, and the run's trainable count at rank r."""
    cfg = task_cfg.replace(method=method, r=r)
    bundle, _, _ = prepare(cfg, base=base, dataset=dataset, device=torch.device("cpu"))
    layouts = [layer.block_layout for _, layer in symlora.adapter_layers(bundle.model)]
    return layouts, symlora.count_parameters(bundle.model).trainable


def budget_rank(base, task_cfg: RunConfig, r: int, dataset) -> tuple[int, float]:
    """The SymLoRA rank whose trainable count is closest to LoRA's at rank r, and the ratio
    of the two counts (``symlora.blocks.rank_for_budget``: counts are linear in the rank,
    and the head both train does not move the answer)."""
    lora, lora_count = adapted(base, task_cfg, "lora", r, dataset)
    sym, sym_count = adapted(base, task_cfg, "symlora", r, dataset)
    best = rank_for_budget(sym, "symlora", total_params(lora, "lora", r))
    best_count = sym_count + total_params(sym, "symlora", best) - total_params(sym, "symlora", r)
    return best, best_count / lora_count


# --------------------------------------------------------------------------- one row of the table
@dataclass(frozen=True)
class Row:
    """A configuration whose learning rate is chosen: task, steps, method and rank."""

    task: str
    steps: int
    label: str
    method: str
    r: int

    @property
    def key(self) -> str:
        return f"{self.task} · {self.steps} steps · {self.label}"


@dataclass
class Context:
    """What the runs of one task share: its base model, its data per seed, its settings."""

    task: Task
    base: Any
    tuning: dict[int, Splits]
    final: dict[int, Splits]
    device: str
    metric_name: str = "accuracy"

    def config(self, row: Row, lr: float, seed: int) -> RunConfig:
        return RunConfig.from_preset(self.task.preset, data=self.task.data, method=row.method, r=row.r, lr=lr,
                                     steps=row.steps, batch_size=self.task.batch_size, seed=seed, device=self.device,
                                     eval_every=row.steps, emit_every=max(1, row.steps), emit_interval_s=1e9,
                                     **self.task.overrides)


class Engines:
    """One :class:`Engine` per (configuration, learning rate) on a GPU: the seeds of one grid
    point train together, and a run that breaks its group (a diverged run whose spectrum cannot
    be computed, say) takes down only its own grid point, which then counts as diverged."""

    def __init__(self, base: Any, device: str, max_runs: int) -> None:
        self.base, self.device, self.max_runs = base, device, max_runs
        self._engines: dict[tuple[str, int, float], Engine] = {}

    def get(self, row: Row, lr: float) -> Engine:
        # On a CPU every run is a group of its own anyway (the engine stacks on accelerators
        # only), so one engine there keeps ``max_runs`` a limit for the whole task.
        key = (row.label, row.steps, lr) if self.device.startswith("cuda") else ("", 0, 0.0)
        if key not in self._engines:
            self._engines[key] = Engine(load_base=lambda name: self.base, device=self.device, cache_size=0,
                                        max_runs=self.max_runs)
        return self._engines[key]

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()


def execute(engines: Engines, ctx: Context, todo: list[tuple[Row, float, int, str]]) -> list[dict[str, Any]]:
    """Train every (row, lr, seed, split); one result dict per run.

    ``split`` "validation" trains on the tuning data and scores the validation part;
    "test" trains on the same data and scores the test split.  At most ``engines.max_runs``
    runs are submitted at a time (runs that cannot share steps each train in a thread)."""
    if len(todo) > engines.max_runs:
        return [r for i in range(0, len(todo), engines.max_runs) for r in execute(engines, ctx, todo[i:i + engines.max_runs])]
    handles = []
    for row, lr, seed, split in todo:
        data = ctx.tuning[seed] if split == "validation" else ctx.final[seed]
        handles.append(engines.get(row, lr).submit(ctx.config(row, lr, seed), dataset=data))
    out = []
    for (row, lr, seed, split), handle in zip(todo, handles):
        final = None
        try:
            for event in handle.events():
                final = event
        except Exception as err:  # noqa: BLE001 — the run (or its group) broke: it counts as diverged
            final = None
            message = f"{type(err).__name__}: {err}"
        row_out: dict[str, Any] = {"task": row.task, "steps": row.steps, "label": row.label, "method": row.method,
                                   "r": row.r, "lr": lr, "seed": seed, "split": split}
        if final is None or final.result is None:
            row_out |= {"metric_name": ctx.metric_name, "metric_before": None, "metric": None, "status": "error",
                        "message": message, "trainable_params": None, "step_ms": None}
            log.info("%-40s lr %-8g seed %d %-10s error: %s", row.key, lr, seed, split, message)
            out.append(row_out)
            continue
        result = final.result
        value = result.metric_after
        ok = result.status == "done" and value is not None and math.isfinite(value)
        out.append(row_out | {"metric_name": result.metric_name, "metric_before": result.metric_before,
                              "metric": value if ok else None, "status": result.status, "message": result.message,
                              "trainable_params": result.trainable_params, "step_ms": result.step_ms,
                              "peak_mem_bytes": result.peak_mem_bytes})
        log.info("%-40s lr %-8g seed %d %-10s %s %s", row.key, lr, seed, split, result.metric_name,
                 f"{value:.4f}" if ok else f"{result.status}: {result.message}")
    return out


def _score(values: list[float | None], metric_name: str) -> float:
    """Mean validation score, oriented so that larger is better; a diverged run is worst."""
    if any(v is None for v in values):
        return -math.inf
    mean = statistics.fmean(values)  # type: ignore[arg-type]
    return -mean if metric_name == "perplexity" else mean


def choose_lr(runs: list[dict[str, Any]]) -> tuple[float, dict[float, float | None]]:
    """The learning rate with the best mean **validation** score over seeds, and every
    grid point's mean (None where a run diverged).  Test runs are refused, not ignored:
    choosing must never see them."""
    if any(r["split"] != "validation" for r in runs):
        raise ValueError("choose_lr takes validation runs only")
    by_lr: dict[float, list[float | None]] = {}
    for r in runs:
        by_lr.setdefault(r["lr"], []).append(r["metric"])
    metric_name = runs[0]["metric_name"]
    best = max(sorted(by_lr), key=lambda lr: _score(by_lr[lr], metric_name))
    means = {lr: (None if any(v is None for v in vs) else statistics.fmean(vs)) for lr, vs in sorted(by_lr.items())}
    return best, means  # type: ignore[arg-type]


def race(task: Task, ranks: list[int], seeds: int, device: str, scales: list[int], *, lrs: tuple[float, ...] | None = None,
         steps: int | None = None, widen: int = 2, val_fraction: float = 0.2, budget: bool = True,
         methods: tuple[str, ...] = METHODS, data_cache: str | None = None, model_options: dict[str, Any] | None = None,
         max_runs: int = 256, sweep_seeds: int | None = None,
         budget_only: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The protocol on one task: (every run, one summary per configuration).  ``sweep_seeds``
    (default: ``seeds``) trains fewer seeds per grid point where compute is short;
    ``budget_only`` keeps SymLoRA's equal-budget rows alone (a process of their own)."""
    sweep_seeds = min(seeds, sweep_seeds or seeds)
    probe_cfg = RunConfig.from_preset(task.preset, data=task.data, batch_size=task.batch_size, device="cpu",
                                      **task.overrides)
    options = dict(model_options or {}).get(probe_cfg.model, {})
    if probe_cfg.image_size:
        options = {"image_size": probe_cfg.image_size} | options
    base = load_model(probe_cfg.model, **options)
    tuning, final = {}, {}
    for seed in range(seeds):
        full = cached_dataset(task, seed, data_cache)
        tuning[seed], final[seed] = carve_validation(full, val_fraction, seed)
    ctx = Context(task, base, tuning, final, device,
                  "perplexity" if isinstance(final[0], TextSplits) else "accuracy")
    if device.startswith("cuda"):  # torch's linalg libraries load lazily, and not safely from two threads at once
        probe = torch.eye(2, device=device)
        torch.linalg.eigvalsh(probe), torch.linalg.svdvals(probe)
    grid0 = tuple(sorted(lrs or task.lrs))
    rows: list[Row] = []
    for scale in scales:
        n_steps = (steps or task.steps) * scale
        for r in ranks:
            if "lora" in methods:
                rows.append(Row(task.name, n_steps, f"lora r={r}", "lora", r))
            if "symlora" in methods:
                if not budget_only:
                    rows.append(Row(task.name, n_steps, f"symlora r={r}", "symlora", r))
                if budget or budget_only:
                    rb, ratio = budget_rank(base, probe_cfg.replace(steps=1), r, tuning[0])
                    log.info("%s: equal budget for LoRA r=%d is SymLoRA r=%d (params ×%.4f)", task.name, r, rb, ratio)
                    if rb != r:
                        rows.append(Row(task.name, n_steps, f"symlora r={rb} (budget of lora r={r})", "symlora", rb))
    grids = {row: list(grid0) for row in rows}
    engine = Engines(base, device, max_runs)
    try:
        runs = execute(engine, ctx, [(row, lr, s, "validation") for row in rows for lr in grids[row] for s in range(sweep_seeds)])
        widened: dict[Row, int] = {row: 0 for row in rows}
        for _ in range(widen):  # grow the grid past an edge that holds the best
            extra = []
            for row in rows:
                best, _ = choose_lr([r for r in runs if r["label"] == row.label and r["steps"] == row.steps])
                grid = grids[row]
                if len(grid) > 1 and best in (grid[0], grid[-1]):
                    ratio = grid[1] / grid[0]
                    new = float(f"{(grid[0] / ratio if best == grid[0] else grid[-1] * ratio):.3g}")
                    if best == grid[0]:
                        grid.insert(0, new)
                    else:
                        grid.append(new)
                    widened[row] += 1
                    extra += [(row, new, s, "validation") for s in range(sweep_seeds)]
            if not extra:
                break
            runs += execute(engine, ctx, extra)
        chosen = {}
        for row in rows:
            chosen[row] = choose_lr([r for r in runs if r["label"] == row.label and r["steps"] == row.steps])
        runs += execute(engine, ctx, [(row, chosen[row][0], s, "test") for row in rows for s in range(seeds)])
    finally:
        engine.close()
    summary = []
    for row in rows:
        best, means = chosen[row]
        test = [r for r in runs if r["split"] == "test" and r["label"] == row.label and r["steps"] == row.steps]
        values = [r["metric"] for r in test if r["metric"] is not None]
        grid = grids[row]
        summary.append({
            "task": row.task, "steps": row.steps, "label": row.label, "method": row.method, "r": row.r,
            "metric_name": test[0]["metric_name"], "grid": grid, "validation": {f"{lr:g}": v for lr, v in means.items()},
            "chosen_lr": best, "at_edge": len(grid) > 1 and best in (grid[0], grid[-1]), "widened": widened[row],
            "seeds": len(test), "diverged": len(test) - len(values),
            "failed": sum(1 for r in runs if r["label"] == row.label and r["steps"] == row.steps
                          and r["status"] == "error" and not (r["message"] or "").startswith("the loss became")),
            "metric_mean": statistics.fmean(values) if values else None,
            "metric_std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "metric_before": statistics.fmean(r["metric_before"] for r in test if r["metric_before"] is not None)
            if any(r["metric_before"] is not None for r in test) else None,
            "trainable_params": next((r["trainable_params"] for r in runs if r["label"] == row.label
                                      and r["trainable_params"] is not None), None),
        })
    return runs, summary


def cached_dataset(task: Task, seed: int, data_cache: str | None) -> Splits:
    """The task's data for ``seed``; with ``data_cache`` read from (or written to) a file
    there, so a machine without the data packages can run the grid."""
    if data_cache is None:
        return load_dataset(task.data, seed=seed, **task.data_kwargs)
    tag = hashlib.sha256(json.dumps([task.data, seed, task.data_kwargs], sort_keys=True, default=str).encode()).hexdigest()[:12]
    path = Path(data_cache) / f"{task.data.replace(':', '-')}-{seed}-{tag}.pt.gz"
    if path.exists():
        with gzip.open(path, "rb") as f:
            return torch.load(f, weights_only=False)
    data = load_dataset(task.data, seed=seed, **task.data_kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        torch.save(data, f)
    return data


# --------------------------------------------------------------------------- differences and tables
TARGETS = {"accuracy": 0.005, "perplexity": 0.03}  # SymLoRA within 0.5 point, or within 3 % perplexity


def differences(runs: list[dict[str, Any]], summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """SymLoRA − LoRA on the test split per task, step count and LoRA rank, paired by seed,
    each at its own chosen learning rate, at equal rank and at equal budget; ``meets_target``
    says whether SymLoRA is within 0.5 point (accuracy) or 3 % (perplexity) of LoRA."""
    test = [r for r in runs if r["split"] == "test"]
    by: dict[tuple[str, int, str], dict[int, dict[str, Any]]] = {}
    for r in test:
        by.setdefault((r["task"], r["steps"], r["label"]), {})[r["seed"]] = r
    means = {(s["task"], s["steps"], s["label"]): s for s in summary}
    out = []
    for (task, steps, label), lora in by.items():
        if not label.startswith("lora r="):
            continue
        r = int(label.removeprefix("lora r="))
        budget = next((lab for (t, st, lab) in by if t == task and st == steps and lab.endswith(f"(budget of lora r={r})")), None)
        metric = next(iter(lora.values()))["metric_name"]
        entry: dict[str, Any] = {"task": task, "steps": steps, "r": r, "metric_name": metric,
                                 "budget_label": budget or f"symlora r={r}", "lora_lr": means[(task, steps, label)]["chosen_lr"]}
        for key, sym_label in (("equal_rank", f"symlora r={r}"), ("equal_budget", budget or f"symlora r={r}")):
            sym = by.get((task, steps, sym_label), {})
            seeds = sorted(s for s in set(sym) & set(lora) if sym[s]["metric"] is not None and lora[s]["metric"] is not None)
            diffs = [sym[s]["metric"] - lora[s]["metric"] for s in seeds]
            if not diffs:
                entry[key] = None
                continue
            lora_mean = statistics.fmean(lora[s]["metric"] for s in seeds)
            sym_mean = statistics.fmean(sym[s]["metric"] for s in seeds)
            mean = statistics.fmean(diffs)
            slack = 1e-9  # "within" includes the bound: one test image less out of 200 is 0.5 point
            meets = (sym_mean <= lora_mean * (1 + TARGETS[metric]) + slack if metric == "perplexity"
                     else mean >= -TARGETS[metric] - slack)
            entry[key] = {"diff_mean": mean, "diff_std": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
                          "relative": sym_mean / lora_mean - 1, "seeds": len(diffs), "meets_target": meets,
                          "symlora_lr": means[(task, steps, sym_label)]["chosen_lr"],
                          "param_ratio": sym[seeds[0]]["trainable_params"] / lora[seeds[0]]["trainable_params"]}
        out.append(entry)
    order = list(dict.fromkeys(r["task"] for r in runs))
    return sorted(out, key=lambda d: (order.index(d["task"]), d["steps"], d["r"]))


def _value(mean: float | None, std: float, metric: str) -> str:
    if mean is None:
        return "diverged"
    if metric == "accuracy":
        return f"{100 * mean:.1f} ± {100 * std:.1f} %"
    return f"{mean:.2f} ± {std:.2f}"


def markdown(summary: list[dict[str, Any]], diffs: list[dict[str, Any]], header: str) -> str:
    lines = [header, "", "| task | steps | configuration | lr grid (validation mean) | chosen lr | test (mean ± sd over seeds) | trainable |",
             "|---|---:|---|---|---:|---|---:|"]
    for s in summary:
        grid = ", ".join(f"{lr:g}" + ("" if v is None else f" ({100 * v:.1f})" if s["metric_name"] == "accuracy" else f" ({v:.1f})")
                         for lr, v in ((float(k), v) for k, v in s["validation"].items()))
        edge = " (edge)" if s["at_edge"] else ""
        edge += f" ({s['failed']} runs failed)" if s.get("failed") else ""
        lines.append(f"| {s['task']} | {s['steps']} | {s['label']} | {grid} | {s['chosen_lr']:g}{edge} "
                     f"| {_value(s['metric_mean'], s['metric_std'], s['metric_name'])} | {s['trainable_params']:,} |")
    lines += ["", "| task | steps | LoRA r (lr) | SymLoRA − LoRA, equal rank (lr; params ×) | equal budget (rank, lr; params ×) |",
              "|---|---:|---|---|---|"]
    for d in diffs:
        def cell(x: dict[str, Any] | None, rank: str = "") -> str:
            if x is None:
                return "—"
            unit = 100 if d["metric_name"] == "accuracy" else 1
            rel = f", {100 * x['relative']:+.1f} %" if d["metric_name"] == "perplexity" else ""
            mark = "" if x["meets_target"] else " **✗**"
            return f"{unit * x['diff_mean']:+.2f} ± {unit * x['diff_std']:.2f}{rel}{mark} ({rank}{x['symlora_lr']:g}; ×{x['param_ratio']:.3f})"
        rank = d["budget_label"].split(" ")[1] + ", "
        lines.append(f"| {d['task']} | {d['steps']} | {d['r']} ({d['lora_lr']:g}) | {d['metric_name']} {cell(d['equal_rank'])} "
                     f"| {cell(d['equal_budget'], rank)} |")
    return "\n".join(lines) + "\n"


def write(out: Path, meta: dict[str, Any], runs: list[dict[str, Any]], summary: list[dict[str, Any]]) -> str:
    """Write ``out`` (JSON: meta, summary, differences, runs) and ``out.md``; return the Markdown."""
    order = list(dict.fromkeys(s["task"] for s in summary))
    summary = sorted(summary, key=lambda s: (order.index(s["task"]), s["steps"], s["method"] != "lora", s["r"]))
    diffs = differences(runs, summary)
    names = dict.fromkeys(s["task"] for s in summary)
    meta = meta | {"tasks": {name: TASKS[name].description for name in names if name in TASKS}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "summary": summary, "differences": diffs, "runs": runs}, indent=1) + "\n")
    header = "\n".join(f"Command: `{m['command']}` on {m['hardware']}, torch {m['torch']}, {m['wall_s']:.0f} s."
                       for m in (meta.get("parts") or [meta]))
    table = markdown(summary, diffs, header)
    out.with_suffix(".md").write_text(table)
    return table


def merge(paths: list[str], out: Path) -> int:
    """One results file from several runs of this script (e.g. one per task or machine);
    a configuration measured in a later file replaces the same one from an earlier file."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    summary: dict[tuple, dict[str, Any]] = {}
    runs: dict[tuple, list[dict[str, Any]]] = {}
    for part in parts:
        for s in part["summary"]:
            key = (s["task"], s["steps"], s["label"])
            summary[key] = s
            runs[key] = [r for r in part["runs"] if (r["task"], r["steps"], r["label"]) == key]
    metas = [m for part in parts for m in part["meta"].get("parts", [part["meta"]])]
    protocol = next((p["meta"]["protocol"] for p in parts if "protocol" in p["meta"]), None)
    write(out, {"protocol": protocol, "parts": metas}, [r for rs in runs.values() for r in rs], list(summary.values()))
    return 0


# --------------------------------------------------------------------------- processes side by side
def shard_args(args: argparse.Namespace) -> list[list[str]]:
    """One process per task, step scale and method (SymLoRA's equal-budget row with its own)."""
    common = ["--seeds", str(args.seeds), "--device", args.device, "--ranks", args.ranks, "--widen", str(args.widen),
              "--val-fraction", str(args.val_fraction)]
    for flag, value in (("--steps", args.steps), ("--lrs", args.lrs), ("--data-cache", args.data_cache),
                        ("--sweep-seeds", args.sweep_seeds), ("--max-runs", args.max_runs),
                        ("--minilm-dir", args.minilm_dir), ("--lambda-lr-ratio", args.lambda_lr_ratio),
                        ("--symlora-init", args.symlora_init), ("--init-scale", args.init_scale)):
        if value is not None:
            common += [f"{flag}={value}"]
    methods = args.methods.split(",") if args.methods else list(METHODS)
    # SymLoRA's equal-rank and equal-budget rows are processes of their own: equal shares of work
    variants = {"lora": [[]], "symlora": [["--no-budget"]] + ([] if args.no_budget else [["--budget-only"]])}
    if args.budget_only:
        variants["symlora"] = [["--budget-only"]]
    return [["--tasks", name, "--scales", scale, "--methods", method] + common + extra
            for name in filter(None, args.tasks.split(",")) for scale in args.scales.split(",") for method in methods
            for extra in variants[method]]


def run_sharded(args: argparse.Namespace, meta: dict[str, Any]) -> int:
    shards = shard_args(args)
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="claim-shards-"))
    work.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.perf_counter()

    def one(i: int) -> int:
        argv = [sys.executable, str(Path(__file__).resolve()), *shards[i], "--out", str(work / f"shard{i:02d}.json")]
        with open(work / f"shard{i:02d}.log", "w") as logfile:
            code = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=logfile).returncode
        log.info("shard %d/%d (%s) exit %d after %.0f s", i + 1, len(shards), " ".join(shards[i][:6]), code,
                 time.perf_counter() - t0)
        return code

    with ThreadPoolExecutor(args.jobs) as pool:
        codes = list(pool.map(one, range(len(shards))))
    parts = [json.loads(f.read_text()) for f in sorted(work.glob("shard*.json"))]
    runs = [r for part in parts for r in part["runs"]]
    summary = [s for part in parts for s in part["summary"]]
    complete = len(parts) == len(shards)  # a process may still exit non-zero after writing (threads at exit)
    if any(codes):
        log.info("exit codes %s (%d result files of %d)", codes, len(parts), len(shards))
    if not complete:
        log.error("some shards failed; their logs are in %s", work)
        for f in sorted(work.glob("shard*.log")):
            sys.stderr.write(f"--- {f.name}\n" + "".join(f.read_text().splitlines(keepends=True)[-15:]))
    sys.stdout.write(write(Path(args.out), meta | {"wall_s": time.perf_counter() - t0, "complete": complete,
                                                   "shards": [part["meta"] for part in parts]}, runs, summary))
    return 0 if complete else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="digits,fewshot", help=f"comma-separated, from {', '.join(TASKS)}")
    p.add_argument("--ranks", default="8", help="comma-separated LoRA ranks")
    p.add_argument("--methods", help="comma-separated subset of lora,symlora (default: both)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--sweep-seeds", type=int, help="seeds per grid point while choosing (default: --seeds)")
    p.add_argument("--steps", type=int, help="override every task's app step count")
    p.add_argument("--scales", default="1,3", help="comma-separated multiples of the step count")
    p.add_argument("--lrs", help="comma-separated learning rates: one grid for every task (default: each task's)")
    p.add_argument("--widen", type=int, default=2, help="grow the grid past an edge that holds the best, at most this often")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of the training data held out for choosing")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-budget", action="store_true", help="skip the equal-budget SymLoRA rows")
    p.add_argument("--budget-only", action="store_true", help="SymLoRA: only the equal-budget rows")
    p.add_argument("--data-cache", help="a folder of the tasks' data as files (written when missing)")
    p.add_argument("--minilm-dir", help="the all-MiniLM-L6-v2 files, when not from the installed wheel")
    p.add_argument("--symlora-init", choices=["gaussian", "orthogonal"], help="SymLoRA: how Q starts")
    p.add_argument("--init-scale", type=float, help="SymLoRA: Q's column norm at init")
    p.add_argument("--lambda-lr-ratio", type=float, help="SymLoRA: Λ's lr multiplier (default √n per layer)")
    p.add_argument("--max-runs", type=int, help="runs training at once per grid point (default: 256 on a GPU, 1 on a CPU)")
    p.add_argument("--jobs", type=int, default=1, help="run tasks × scales × methods as this many processes")
    p.add_argument("--work-dir", help="with --jobs: where the processes write their files (default: a new temporary folder)")
    p.add_argument("--merge", nargs="+", metavar="JSON", help="combine finished result files into --out, run nothing")
    p.add_argument("--out", default="bench/results/claim.json")
    args = p.parse_args(argv)
    if args.merge:
        return merge(args.merge, Path(args.out))
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    unknown = [t for t in args.tasks.split(",") if t and t not in TASKS]
    if unknown:
        p.error(f"unknown task(s) {unknown}; choose from {', '.join(TASKS)}")
    lrs = tuple(float(x) for x in args.lrs.split(",")) if args.lrs else None
    if lrs is not None and (len(lrs) < 1 or min(lrs) <= 0):
        p.error("--lrs needs positive learning rates")
    device = str(pick_device(args.device))
    knobs = {k: v for k, v in dict(symlora_init=args.symlora_init, init_scale=args.init_scale,
                                   lambda_lr_ratio=args.lambda_lr_ratio).items() if v is not None}
    hardware = torch.cuda.get_device_name() if device.startswith("cuda") else f"{platform.processor() or 'CPU'} ({torch.get_num_threads()} threads)"
    protocol = {"validation": f"{args.val_fraction:.0%} of each seed's training data (stratified), never the test split",
                "seeds": args.seeds, "sweep_seeds": min(args.seeds, args.sweep_seeds or args.seeds), "scales": args.scales, "widen": args.widen, "knobs": knobs,
                "grids": {name: list(lrs or TASKS[name].lrs) for name in args.tasks.split(",") if name},
                "choice": "best mean validation score over the seeds; then test at that lr, same seeds"}
    meta = {"protocol": protocol, "command": " ".join(["python", "bench/claim.py"] + (argv if argv is not None else sys.argv[1:])),
            "hardware": hardware, "torch": torch.__version__}
    if args.jobs > 1:
        return run_sharded(args, meta)
    t0 = time.perf_counter()
    runs: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    methods = tuple(args.methods.split(",")) if args.methods else METHODS
    options = {"minilm-l6": {"model_dir": args.minilm_dir}} if args.minilm_dir else None
    for name in filter(None, args.tasks.split(",")):
        task = TASKS[name]
        if knobs:
            task = replace(task, overrides=task.overrides | knobs)
        r, s = race(task, [int(x) for x in args.ranks.split(",") if x], args.seeds, device,
                    [int(x) for x in args.scales.split(",") if x], lrs=lrs, steps=args.steps, widen=args.widen,
                    val_fraction=args.val_fraction, budget=not args.no_budget, methods=methods,
                    data_cache=args.data_cache, model_options=options,
                    max_runs=args.max_runs or (256 if device.startswith("cuda") else 1), sweep_seeds=args.sweep_seeds,
                    budget_only=args.budget_only)
        runs += r
        summary += s
        write(Path(args.out), meta | {"wall_s": time.perf_counter() - t0, "complete": False}, runs, summary)
    sys.stdout.write(write(Path(args.out), meta | {"wall_s": time.perf_counter() - t0, "complete": True}, runs, summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
