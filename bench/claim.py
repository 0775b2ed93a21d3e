"""Does SymLoRA keep up with LoRA on half the weights?  A seeded grid on our own tasks.

For each task: head-only, full fine-tuning, and LoRA vs SymLoRA at equal rank
(r ∈ --ranks) and at equal parameter budget (SymLoRA at the rank whose trainable count is
closest to LoRA's at r: 2r on square layers), every configuration over --seeds seeds with
the same data order per seed.  Also the symmetric share of the energy in LoRA's learned
square updates, the SymLoRA − LoRA differences paired by seed, and (``--init-study``) how
SymLoRA's initialisation shapes its start.

    python bench/claim.py --tasks digits,fewshot,fmnist-cnn --device cuda --jobs 15
    python bench/claim.py --tasks fortunes --device cpu
    python bench/claim.py --smoke                # 2 steps, 1 seed: checks the plumbing
    python bench/claim.py --merge A.json B.json --out assets/results/claim.json

Writes a JSON file (meta, per-configuration summary, paired differences, every run) and a
Markdown table next to it, rewritten after every run.  ``--jobs N`` runs the grid as N
single-threaded processes side by side (small models leave a big GPU idle), so its step
times are not speed measurements: ``bench/adapter_speed.py`` is.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import symlora  # noqa: E402
from symlora.blocks import BlockLayout, rank_for_budget, total_params  # noqa: E402
from symlora.lab.data import FASHION_MNIST_CLASSES, load_dataset  # noqa: E402
from symlora.lab.runconfig import RunConfig  # noqa: E402
from symlora.lab.train import pick_device, prepare, run  # noqa: E402
from symlora.lab.zoo import load_model  # noqa: E402

log = logging.getLogger("claim")


@dataclass(frozen=True)
class Task:
    """A benchmark task: a preset plus the data and schedule the grid uses."""

    name: str
    preset: str
    data: str
    steps: int
    lr: float
    batch_size: int
    description: str = ""
    data_kwargs: dict[str, Any] = field(default_factory=dict)
    methods: tuple[str, ...] = ("head-only", "full", "lora", "symlora")


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("digits", "digits", "mnist-5k", steps=300, lr=3e-3, batch_size=64,
             description="the Fashion-MNIST ViT → MNIST digits (4,000 train / 1,000 test), 300 steps"),
        Task("fewshot", "digits", "fmnist-fewshot", steps=150, lr=2e-3, batch_size=32,
             description="the Fashion-MNIST ViT → 4 look-alike garments, 20 shots each, from images it never saw; 150 steps"),
        Task("fmnist-cnn", "efficientnet-digits", "fmnist-fewshot", steps=200, lr=3e-3, batch_size=64,
             description="EfficientNet-Lite0 (ImageNet) → Fashion-MNIST, 10 classes × 100 shots, 64 px; 200 steps",
             data_kwargs=dict(shots=100, classes=tuple(FASHION_MNIST_CLASSES), test_per_class=200)),
        Task("fortunes", "fortunes", "fortunes:startrek", steps=24, lr=5e-3, batch_size=8, methods=("lora", "symlora"),
             description="SmolLM2-135M → Star Trek quotes, held-out perplexity (lower is better); 24 steps"),
        Task("fortunes-science", "fortunes", "fortunes:science", steps=24, lr=5e-3, batch_size=8, methods=("lora", "symlora"),
             description="SmolLM2-135M → science quotes, held-out perplexity (lower is better); 24 steps"),
    )
}

INIT_VARIANTS: dict[str, dict[str, Any]] = {
    "gaussian (1/√n)": dict(symlora_init="gaussian", init_scale=1.0, lambda_lr_ratio=1.0),
    "orthogonal": dict(symlora_init="orthogonal", init_scale=1.0, lambda_lr_ratio=1.0),
    "gaussian ×n^¼": dict(symlora_init="gaussian", init_scale=-0.25, lambda_lr_ratio=1.0),  # negative: scale = n^0.25
    "Λ lr ×√n": dict(symlora_init="gaussian", init_scale=1.0, lambda_lr_ratio=-0.5),  # negative: ratio = √n
    "rsLoRA": dict(symlora_init="gaussian", init_scale=1.0, use_rslora=True, lambda_lr_ratio=1.0),
}


INIT_STUDY = "the Fashion-MNIST ViT → MNIST digits, r = 8, 300 steps: SymLoRA under five initialisation rules"


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


def _resolve_negative(knobs: dict[str, Any], width: int) -> dict[str, Any]:
    """Variants give n-dependent knobs as negative exponents of the layer width n."""
    return {k: width ** -v if k in ("init_scale", "lambda_lr_ratio") and v is not None and v < 0 else v
            for k, v in knobs.items()}


def one_run(cfg: RunConfig, base, dataset) -> dict[str, Any]:
    curve: list[tuple[int, float]] = []
    final = None
    for event in run(cfg, base=base, dataset=dataset, keep_model=True):
        if event.metric is not None:
            curve.append((event.step, event.metric))
        final = event
    result = final.result
    row = result.summary() | {"curve": curve}
    if result.status != "done":
        row["error"] = result.message
    if cfg.method == "lora":  # how symmetric did LoRA's square updates turn out?
        fractions = {name: symlora.symmetric_fraction(layer.delta_weight().detach().float().cpu())
                     for name, layer in symlora.adapter_layers(result.bundle.model)
                     if layer.in_features == layer.out_features}
        row["symmetric_fraction"] = fractions
    result.bundle = None
    return row


def model_width(bundle) -> int:
    """The hidden size n of a zoo model (what n-dependent init knobs scale with)."""
    model = bundle.model
    return int(getattr(model, "embed_dim", None) or model.config.hidden_size)


def grid(task: Task, ranks: list[int], seeds: int, device: str, budget: bool, steps: int | None,
         fmnist_dir: str | None, knobs: dict[str, Any], methods: set[str] | None = None) -> Iterator[dict[str, Any]]:
    """Every run of one task, as it finishes (a configuration that equals an earlier one,
    such as an equal-budget rank that is the equal rank, is reported without rerunning)."""
    base = load_model(RunConfig.from_preset(task.preset).model)
    kwargs = dict(task.data_kwargs)
    if fmnist_dir and task.data.startswith("fmnist"):
        kwargs["data_dir"] = fmnist_dir
    task_cfg = RunConfig.from_preset(task.preset, data=task.data, steps=steps or task.steps, lr=task.lr,
                                     batch_size=task.batch_size, device=device,
                                     eval_every=max(1, (steps or task.steps) // 6),
                                     **_resolve_negative(knobs, model_width(base)))
    wanted = [m for m in task.methods if methods is None or m in methods]
    configs: list[tuple[str, RunConfig]] = []
    for method in wanted:
        if method in ("head-only", "full"):
            configs.append((method, task_cfg.replace(method=method)))
    probe_data = load_dataset(task.data, seed=0, **kwargs)
    for r in ranks:
        if "lora" in wanted:
            configs.append((f"lora r={r}", task_cfg.replace(method="lora", r=r)))
        if "symlora" in wanted:
            configs.append((f"symlora r={r}", task_cfg.replace(method="symlora", r=r)))
            if budget:
                rb, ratio = budget_rank(base, task_cfg, r, probe_data)
                log.info("%s: equal budget for LoRA r=%d is SymLoRA r=%d (params ×%.4f)", task.name, r, rb, ratio)
                configs.append((f"symlora r={rb} (budget of lora r={r})", task_cfg.replace(method="symlora", r=rb)))
    done: dict[str, dict[str, Any]] = {}
    for label, cfg in configs:
        for seed in range(seeds):
            seeded = cfg.replace(seed=seed)
            key = repr(seeded)
            t0 = time.perf_counter()
            if key not in done:
                done[key] = one_run(seeded, base, load_dataset(task.data, seed=seed, **kwargs))
            row = done[key] | {"task": task.name, "label": label, "seed": seed,
                               "r": cfg.adapter.r if cfg.uses_adapter else None}
            log.info("%-12s %-38s seed %d: %s %.4f → %.4f (%.1fs)", task.name, label, seed, row["metric_name"],
                     row["metric_before"], row["metric_after"], time.perf_counter() - t0)
            yield row


def init_study(seeds: int, device: str, steps: int, fmnist_dir: str | None) -> Iterator[dict[str, Any]]:
    """SymLoRA's slow start on digits: the same run under each initialisation rule."""
    base = load_model("fmnist-vit")
    width = model_width(base)
    for name, knobs in [("lora", {})] + list(INIT_VARIANTS.items()):
        method = "lora" if name == "lora" else "symlora"
        for seed in range(seeds):
            cfg = RunConfig.from_preset("digits", method=method, steps=steps, lr=3e-3, batch_size=64, r=8, seed=seed,
                                        device=device, eval_every=max(1, steps // 12),
                                        **_resolve_negative(knobs, width))
            row = one_run(cfg, base, load_dataset("mnist-5k", seed=seed))
            log.info("init %-18s seed %d: %.4f", name, seed, row["metric_after"])
            yield row | {"task": "init-study", "label": name, "seed": seed, "r": 8}


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± std over seeds for every (task, label)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["label"]), []).append(row)
    out = []
    for (task, label), rs in groups.items():
        metric = [r["metric_after"] for r in rs]
        early = [r["curve"][1][1] for r in rs if len(r["curve"]) > 1]
        fractions = [v for r in rs for v in r.get("symmetric_fraction", {}).values()]
        out.append({
            "task": task, "label": label, "seeds": len(rs), "metric_name": rs[0]["metric_name"],
            "metric_mean": statistics.fmean(metric), "metric_std": statistics.stdev(metric) if len(metric) > 1 else 0.0,
            "early_metric_mean": statistics.fmean(early) if early else None,
            "trainable_params": rs[0]["trainable_params"],
            "step_ms": statistics.fmean(r["step_ms"] or 0 for r in rs),
            "peak_mem_bytes": max(r["peak_mem_bytes"] for r in rs),
            "symmetric_fraction": statistics.fmean(fractions) if fractions else None,
        })
    return out


def differences(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """SymLoRA − LoRA per task and LoRA rank r, paired by seed (same data order), at equal
    rank and at equal budget, with the parameter ratios and LoRA's symmetric energy share."""
    by: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for row in rows:
        by.setdefault((row["task"], row["label"]), {})[row["seed"]] = row
    out = []
    for (task, label), lora in by.items():
        if not label.startswith("lora r="):
            continue
        r = int(label.removeprefix("lora r="))
        budget = next((lab for (t, lab) in by if t == task and lab.endswith(f"(budget of lora r={r})")), None)
        entry: dict[str, Any] = {"task": task, "r": r, "metric_name": next(iter(lora.values()))["metric_name"],
                                 "budget_label": budget}
        for key, sym_label in (("equal_rank", f"symlora r={r}"), ("equal_budget", budget)):
            sym = by.get((task, sym_label), {}) if sym_label else {}
            seeds = sorted(set(sym) & set(lora))
            diffs = [sym[s]["metric_after"] - lora[s]["metric_after"] for s in seeds]
            entry[key] = None if not diffs else {
                "diff_mean": statistics.fmean(diffs), "diff_std": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
                "seeds": len(diffs), "param_ratio": sym[seeds[0]]["trainable_params"] / lora[seeds[0]]["trainable_params"]}
        fractions = [v for row in lora.values() for v in row.get("symmetric_fraction", {}).values()]
        entry["lora_symmetric_fraction"] = statistics.fmean(fractions) if fractions else None
        entry["lora_symmetric_fraction_range"] = [min(fractions), max(fractions)] if fractions else None
        out.append(entry)
    tasks = list(dict.fromkeys(row["task"] for row in rows))
    return sorted(out, key=lambda d: (tasks.index(d["task"]), d["r"]))


def markdown_differences(diffs: list[dict[str, Any]]) -> str:
    lines = ["| task | LoRA rank r | SymLoRA − LoRA, equal rank (params ×) | SymLoRA − LoRA, equal budget (rank, params ×) "
             "| sym. energy of LoRA's ΔW (min–max) |", "|---|---|---|---|---|"]
    for d in diffs:
        def cell(x: dict[str, Any] | None, extra: str = "") -> str:
            if x is None:
                return "—"
            return f"{x['diff_mean']:+.4f} ± {x['diff_std']:.4f} ({extra}×{x['param_ratio']:.3f})"
        rank = d["budget_label"].split(" ")[1] + ", " if d["budget_label"] else ""
        frac = d["lora_symmetric_fraction"]
        sym = "—" if frac is None else f"{frac:.3f} ({d['lora_symmetric_fraction_range'][0]:.3f}–{d['lora_symmetric_fraction_range'][1]:.3f})"
        lines.append(f"| {d['task']} | {d['r']} | {d['metric_name']} {cell(d['equal_rank'])} | {cell(d['equal_budget'], rank)} | {sym} |")
    return "\n".join(lines) + "\n"


def markdown(summary: list[dict[str, Any]], header: str) -> str:
    lines = [header, "", "| task | configuration | metric (mean ± std) | early metric | trainable params | step ms | peak MiB | sym. energy of ΔW |",
             "|---|---|---|---|---|---|---|---|"]
    for s in summary:
        early = f"{s['early_metric_mean']:.4f}" if s["early_metric_mean"] is not None else "—"
        sym = f"{s['symmetric_fraction']:.3f}" if s["symmetric_fraction"] is not None else "—"
        lines.append(f"| {s['task']} | {s['label']} | {s['metric_name']} {s['metric_mean']:.4f} ± {s['metric_std']:.4f} | {early} "
                     f"| {s['trainable_params']:,} | {s['step_ms']:.1f} | {s['peak_mem_bytes'] / 2**20:.1f} | {sym} |")
    return "\n".join(lines) + "\n"


def write(out: Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """Write ``out`` (JSON: meta, summary, runs) and ``out.md``; return the Markdown."""
    summary, diffs = summarise(rows), differences(rows)
    names = dict.fromkeys(row["task"] for row in rows)
    meta = meta | {"tasks": {name: TASKS[name].description if name in TASKS else INIT_STUDY for name in names}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "summary": summary, "differences": diffs, "runs": rows}, indent=1) + "\n")
    header = "\n".join(f"Command: `{m['command']}` on {m['hardware']}, torch {m['torch']}, {m['wall_s']:.0f} s."
                       for m in (meta.get("parts") or [meta]))
    table = markdown(summary, header) + ("\n" + markdown_differences(diffs) if diffs else "")
    out.with_suffix(".md").write_text(table)
    return table


def merge(paths: list[str], out: Path) -> int:
    """One results file from several runs of this script (e.g. one per task or machine)."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    rows = [row for part in parts for row in part["runs"]]
    write(out, {"parts": [m for part in parts for m in part["meta"].get("parts", [part["meta"]])]}, rows)
    return 0


def shard_args(args: argparse.Namespace) -> list[list[str]]:
    """Split a grid into independent runs of this script: per task, one for head-only/full
    and one per rank (LoRA, SymLoRA and its equal-budget rank), plus the init study."""
    common = ["--seeds", str(args.seeds), "--device", args.device]
    for flag, value in (("--steps", args.steps), ("--fashion-mnist-dir", args.fashion_mnist_dir),
                        ("--symlora-init", args.symlora_init), ("--init-scale", args.init_scale),
                        ("--lambda-lr-ratio", args.lambda_lr_ratio)):
        if value is not None:
            common += [f"{flag}={value}"]
    common += ["--no-budget"] if args.no_budget else []
    wanted = set(args.methods.split(",")) if args.methods else None
    shards = []
    for name in filter(None, args.tasks.split(",")):
        methods = [m for m in TASKS[name].methods if wanted is None or m in wanted]
        plain = [m for m in methods if m in ("head-only", "full")]
        adapters = [m for m in methods if m in ("lora", "symlora")]
        if plain:
            shards.append(["--tasks", name, "--ranks=", "--methods", ",".join(plain)] + common)
        if adapters:
            shards += [["--tasks", name, "--ranks", r, "--methods", ",".join(adapters)] + common
                       for r in filter(None, args.ranks.split(","))]
    if args.init_study:
        shards.append(["--tasks=", "--init-study", "--init-steps", str(args.init_steps)] + common)
    return shards


def run_sharded(args: argparse.Namespace, meta: dict[str, Any]) -> int:
    """Run the grid as ``--jobs`` concurrent single-threaded processes (small models leave a
    big GPU mostly idle), then merge their files into ``--out``."""
    shards = shard_args(args)
    work = Path(tempfile.mkdtemp(prefix="claim-shards-"))
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.perf_counter()

    def one(i: int) -> int:
        argv = [sys.executable, str(Path(__file__).resolve()), *shards[i], "--out", str(work / f"shard{i:02d}.json")]
        with open(work / f"shard{i:02d}.log", "w") as logfile:
            code = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=logfile).returncode
        log.info("shard %d/%d (%s) exit %d", i + 1, len(shards), " ".join(shards[i][:4]), code)
        return code

    with ThreadPoolExecutor(args.jobs) as pool:
        codes = list(pool.map(one, range(len(shards))))
    parts = [json.loads(f.read_text()) for f in sorted(work.glob("shard*.json"))]
    rows = [row for part in parts for row in part["runs"]]
    complete = all(c == 0 for c in codes) and all(part["meta"].get("complete") for part in parts)
    if not complete:
        log.error("some shards failed or were cut short; their logs are in %s", work)
    sys.stdout.write(write(Path(args.out), meta | {"wall_s": time.perf_counter() - t0, "complete": complete,
                                                   "shards": [part["meta"] for part in parts]}, rows))
    return 0 if complete else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="digits,fewshot", help=f"comma-separated, from {', '.join(TASKS)}")
    p.add_argument("--ranks", default="2,4,8,16", help="comma-separated adapter ranks ('' for none)")
    p.add_argument("--methods", help="comma-separated subset of head-only,full,lora,symlora (default: all the task has)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, help="override every task's steps")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-budget", action="store_true", help="skip the equal-budget SymLoRA runs")
    p.add_argument("--init-study", action="store_true", help="also compare SymLoRA initialisations on digits")
    p.add_argument("--init-steps", type=int, default=300)
    p.add_argument("--fashion-mnist-dir", help="where the Fashion-MNIST IDX files are (default: the Debian package's)")
    p.add_argument("--symlora-init", choices=["gaussian", "orthogonal"], help="grid runs: how Q starts")
    p.add_argument("--init-scale", type=float, help="grid runs: Q's column norm at init (negative e: n^-e)")
    p.add_argument("--lambda-lr-ratio", type=float, help="grid runs: Λ's lr multiplier (negative e: n^-e)")
    p.add_argument("--smoke", action="store_true", help="2 steps, 1 seed, ranks 2: a plumbing check")
    p.add_argument("--jobs", type=int, default=1, help="run the grid as this many concurrent single-threaded shards")
    p.add_argument("--merge", nargs="+", metavar="JSON", help="combine finished result files into --out, run nothing")
    p.add_argument("--out", default="bench/results/claim.json")
    args = p.parse_args(argv)
    if args.merge:
        return merge(args.merge, Path(args.out))
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.smoke:
        args.steps, args.seeds, args.ranks, args.init_steps = 2, 1, "2", 2
    unknown = [t for t in args.tasks.split(",") if t and t not in TASKS]
    if unknown:
        p.error(f"unknown task(s) {unknown}; choose from {', '.join(TASKS)}")
    ranks = [int(r) for r in args.ranks.split(",") if r]
    methods = set(args.methods.split(",")) if args.methods else None
    device = str(pick_device(args.device))
    t0 = time.perf_counter()
    knobs = {k: v for k, v in dict(symlora_init=args.symlora_init, init_scale=args.init_scale,
                                   lambda_lr_ratio=args.lambda_lr_ratio).items() if v is not None}
    hardware = torch.cuda.get_device_name() if device.startswith("cuda") else f"{platform.processor() or 'CPU'} ({torch.get_num_threads()} threads)"
    meta = {"knobs": knobs, "command": " ".join(["python", "bench/claim.py"] + (argv if argv is not None else sys.argv[1:])),
            "hardware": hardware, "torch": torch.__version__}
    runs = itertools.chain(*(grid(TASKS[name], ranks, args.seeds, device, not args.no_budget, args.steps,
                                  args.fashion_mnist_dir, knobs, methods) for name in args.tasks.split(",") if name),
                           init_study(args.seeds, device, args.init_steps, args.fashion_mnist_dir) if args.init_study else ())
    if args.jobs > 1:
        return run_sharded(args, meta)
    rows: list[dict[str, Any]] = []
    for row in runs:  # the files are rewritten after every run: a cut-short grid keeps what it finished
        rows.append(row)
        write(Path(args.out), meta | {"wall_s": time.perf_counter() - t0, "complete": False}, rows)
    sys.stdout.write(write(Path(args.out), meta | {"wall_s": time.perf_counter() - t0, "complete": True}, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
