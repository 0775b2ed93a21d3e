"""The Learn tab's live widgets: a parameter calculator and a "build a ΔW" toy.

Pure functions (numbers and a figure); ``app.tab_learn`` wires them to sliders.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from symlora.blocks import BlockLayout
from symlora.lab.resources import asset_path

from .learn_text import TEXT  # noqa: F401  (re-exported for the tab)
from .plots import matrix_figure



def calculator(n_in: int, n_out: int, r: int, layers: int) -> str:
    """A Markdown table: LoRA vs SymLoRA weights for ``layers`` layers of shape in→out."""
    n_in, n_out, r, layers = int(n_in), int(n_out), int(r), int(layers)
    full = n_in * n_out
    layer = BlockLayout(n_in, n_out)
    lora = layer.params("lora", r)
    rows = [
        "| | per layer | × layers | vs full fine-tune |",
        "|---|---:|---:|---:|",
        f"| Full fine-tune (in·out) | {full:,} | {full * layers:,} | 100 % |",
        f"| LoRA r·(in + out) | {lora:,} | {lora * layers:,} | {100 * lora / full:.2f} % |",
    ]
    if not layer.symmetric:
        rows.append("| SymLoRA | – | – | sides are not whole multiples: LoRA only |")
        return "\n".join(rows)
    sym = layer.params("symlora", r)
    how = "n·r + r" if layer.k == 1 else f"{layer.k}·(n·r + r), n = {layer.n}"
    rows.append(f"| SymLoRA {how} | {sym:,} | {sym * layers:,} | {100 * sym / full:.2f} % |")
    rows.append(f"\nSymLoRA needs **{sym / lora:.0%}** of LoRA's weights here.")
    return "\n".join(rows)


def toy_delta_w(l1: float, l2: float, l3: float, orthonormal: bool, seed: int = 0, n: int = 12, scale: float = 1.0):
    """ΔW = s·Q·diag(Λ)·Qᵀ for a random Q (n × 3) and its eigenvalues, largest |λ| first."""
    g = torch.Generator().manual_seed(int(seed))
    q = torch.randn(n, 3, generator=g, dtype=torch.float64) / n ** 0.5
    if orthonormal:
        q, _ = torch.linalg.qr(q)
    lam = torch.tensor([l1, l2, l3], dtype=torch.float64)
    dw = scale * q @ torch.diag(lam) @ q.T
    eig = torch.linalg.eigvalsh(dw)
    eig = eig[eig.abs().argsort(descending=True)][:3]
    return dw, eig


def toy_figure(l1: float, l2: float, l3: float, orthonormal: bool, seed: int = 0):
    """The figure and a caption for the toy ΔW."""
    dw, eig = toy_delta_w(l1, l2, l3, orthonormal, seed)
    fig = matrix_figure(dw.tolist(), eig.tolist())
    shown = ", ".join(f"{v:+.3f}" for v in eig.tolist())
    if orthonormal:
        note = "With orthonormal columns in Q, the eigenvalues of ΔW **are** Λ."
    else:
        note = "Q's columns are random (not orthonormal), so the eigenvalues of ΔW differ from Λ — same signs, different sizes."
    caption = (f"Λ = ({l1:+.2f}, {l2:+.2f}, {l3:+.2f}) → eigenvalues of ΔW: ({shown}). {note} "
               f"ΔW is 12 × 12 = 144 numbers built from 12·3 + 3 = 39 weights; it is symmetric: "
               f"max |ΔW − ΔWᵀ| = {float((dw - dw.T).abs().max()):.1e}.")
    return fig, caption


RESULTS_FILE = asset_path("results", "claim.json")  # the checkout's assets/ or the installed symlora_assets


def _find(summary: list[dict], task: str, label: str) -> dict | None:
    return next((s for s in summary if s["task"] == task and s["label"] == label), None)


def difference(value: float, metric_name: str, std: float | None = None) -> str:
    """A difference with its unit: accuracy in percentage points (``+0.7 pt``), perplexity
    in perplexity units (``−2.3``); ``std`` adds ``± …`` in the same unit."""
    if metric_name == "accuracy":
        shown, spread, unit = 100 * value, None if std is None else 100 * std, " pt"
    else:
        shown, spread, unit = value, std, ""
    text = f"{shown:+.1f}" if abs(shown) >= 0.05 else "0.0"
    text = text.replace("-", "−")
    if spread is not None:
        text += f" ± {spread:.1f}"
    return text + unit


def _paired_table(differences: list[dict]) -> list[str]:
    """SymLoRA − LoRA per task and rank, paired by seed; positive always favours SymLoRA.
    Accuracy differences are in percentage points (pt), perplexity ones in perplexity."""
    lines = ["| task | LoRA rank | SymLoRA − LoRA, same rank (SymLoRA's weights vs LoRA's) | SymLoRA − LoRA, same number of weights |",
             "|---|---:|---|---|"]
    for d in differences:
        sign = -1 if d["metric_name"] == "perplexity" else 1

        def cell(x: dict | None, what: str) -> str:
            if x is None:
                return "—"
            shown = difference(sign * x["diff_mean"], d["metric_name"], x["diff_std"])
            return f"{shown} ({what}{x['param_ratio']:.0%} weights)"

        budget_rank = d["budget_label"].split(" (")[0].removeprefix("symlora ") + " · " if d.get("budget_label") else ""
        lines.append(f"| {d['task']} | {d['r']} | {cell(d['equal_rank'], '')} | {cell(d['equal_budget'], budget_rank)} |")
    return lines


def _verdicts(summary: list[dict]) -> list[str]:
    """One sentence per (task, rank) from the means: for files without paired differences."""
    verdicts = []
    for s in summary:
        if not s["label"].startswith("lora r="):
            continue
        task, r = s["task"], s["label"].removeprefix("lora r=")
        same = _find(summary, task, f"symlora r={r}")
        budget = next((b for b in summary if b["task"] == task and b["label"].endswith(f"(budget of lora r={r})")), None)
        if same is None:
            continue
        sign = -1 if s["metric_name"] == "perplexity" else 1  # report "better is positive"
        name = s["metric_name"]
        text = (f"**{task}, r = {r}:** SymLoRA − LoRA = {difference(sign * (same['metric_mean'] - s['metric_mean']), name)} "
                f"with {same['trainable_params'] / s['trainable_params']:.0%} of the weights")
        if budget is not None:
            text += (f"; at LoRA's budget ({budget['label'].split(' (')[0]}) "
                     f"{difference(sign * (budget['metric_mean'] - s['metric_mean']), name)}")
        verdicts.append(text + ".")
    return verdicts


def results_markdown(path: Path = RESULTS_FILE) -> str:
    """"So is SymLoRA any good?" — the shipped benchmark (``bench/claim.py``): SymLoRA − LoRA
    at equal rank and equal budget (paired by seed when the file has it) and what each task
    is (every configuration's mean ± std: :func:`every_configuration`)."""
    if not path.is_file():
        return "*No benchmark results are shipped with this copy (run `python bench/claim.py`).*"
    results = json.loads(path.read_text())
    summary, meta = results["summary"], results["meta"]
    parts: list[str] = []
    if results.get("differences"):
        parts.append("\n".join(_paired_table(results["differences"])))
    else:
        parts.append("  \n".join(_verdicts(summary)))
    tasks = meta.get("tasks", {})
    if tasks:
        parts.append("\n".join(f"* **{name}**: {text}" for name, text in tasks.items()))
    if any(s["task"] == "init-study" for s in summary):
        parts.append("“Λ lr ×√n” in the init study is this app's default; the other rules start slower.")
    hardware = [m.get("hardware", "") for m in meta.get("parts", [meta])]
    parts.append(f"Measured with `bench/claim.py` on {', '.join(dict.fromkeys(hardware))}; positive differences "
                 "favour SymLoRA (for perplexity, lower is better, so the sign is flipped). Accuracy differences are "
                 "in percentage points (pt: +0.7 pt = 0.7 % more test images right), perplexity differences in "
                 "perplexity. Where SymLoRA loses, the number says by how much.")
    return "\n\n".join(parts)


def every_configuration(path: Path = RESULTS_FILE) -> str:
    """The table of every configuration's mean ± std (accuracy in %, perplexity as is):
    long, so the tab shows it in a closed accordion."""
    if not path.is_file():
        return ""
    summary = json.loads(path.read_text())["summary"]
    lines = ["| task | configuration | result (mean ± std over seeds) | trainable weights |", "|---|---|---|---:|"]
    for s in summary:
        if s["metric_name"] == "accuracy":
            value = f"accuracy {100 * s['metric_mean']:.1f} % ± {100 * s['metric_std']:.1f} pt"
        else:
            value = f"{s['metric_name']} {s['metric_mean']:.2f} ± {s['metric_std']:.2f}"
        lines.append(f"| {s['task']} | {s['label']} | {value} | {s['trainable_params']:,} |")
    return "\n".join(lines)
