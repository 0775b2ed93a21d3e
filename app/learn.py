"""The Learn tab's live widgets: a parameter calculator and a "build a ΔW" toy.

Pure functions (numbers and a figure); ``app.tab_learn`` wires them to sliders.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from symlora.resources import asset_path

from .learn_text import TEXT  # noqa: F401  (re-exported for the tab)
from .params import adapter_size
from .plots import matrix_figure



def calculator(n_in: int, n_out: int, r: int, layers: int) -> str:
    """A Markdown table: LoRA vs SymLoRA weights for ``layers`` layers of shape in→out."""
    n_in, n_out, r, layers = int(n_in), int(n_out), int(r), int(layers)
    full = n_in * n_out
    lora = adapter_size((n_in, n_out), "lora", r)
    rows = [
        "| | per layer | × layers | vs full fine-tune |",
        "|---|---:|---:|---:|",
        f"| Full fine-tune (in·out) | {full:,} | {full * layers:,} | 100 % |",
        f"| LoRA r·(in + out) | {lora:,} | {lora * layers:,} | {100 * lora / full:.2f} % |",
    ]
    try:
        sym = adapter_size((n_in, n_out), "symlora", r)
    except ValueError:
        rows.append("| SymLoRA | – | – | sides are not whole multiples: LoRA only |")
        return "\n".join(rows)
    k = max(n_in, n_out) // min(n_in, n_out)
    n = min(n_in, n_out)
    how = "n·r + r" if k == 1 else f"{k}·(n·r + r), n = {n}"
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


def _paired_table(differences: list[dict]) -> list[str]:
    """SymLoRA − LoRA per task and rank, paired by seed; positive always favours SymLoRA."""
    lines = ["| task | LoRA rank | SymLoRA − LoRA, same rank (SymLoRA's weights vs LoRA's) | SymLoRA − LoRA, same number of weights |",
             "|---|---:|---|---|"]
    for d in differences:
        sign = -1 if d["metric_name"] == "perplexity" else 1

        def cell(x: dict | None, what: str) -> str:
            if x is None:
                return "—"
            diff = sign * x["diff_mean"]
            shown = f"{diff:+.3f}" if abs(diff) >= 0.0005 else "0.000"
            return f"{shown} ± {x['diff_std']:.3f} ({what}{x['param_ratio']:.0%} weights)"

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
        text = (f"**{task}, r = {r}:** SymLoRA − LoRA = {sign * (same['metric_mean'] - s['metric_mean']):+.3f} "
                f"with {same['trainable_params'] / s['trainable_params']:.0%} of the weights")
        if budget is not None:
            text += f"; at LoRA's budget ({budget['label'].split(' (')[0]}) {sign * (budget['metric_mean'] - s['metric_mean']):+.3f}"
        verdicts.append(text + ".")
    return verdicts


def results_markdown(path: Path = RESULTS_FILE) -> str:
    """"So is SymLoRA any good?" — the shipped benchmark (``bench/claim.py``): SymLoRA − LoRA
    at equal rank and equal budget (paired by seed when the file has it), what each task is,
    and every configuration's mean ± std."""
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
    lines = ["| task | configuration | result (mean ± std over seeds) | trainable weights |", "|---|---|---|---:|"]
    for s in summary:
        lines.append(f"| {s['task']} | {s['label']} | {s['metric_name']} {s['metric_mean']:.3f} ± {s['metric_std']:.3f} "
                     f"| {s['trainable_params']:,} |")
    parts.append("**Every configuration**\n\n" + "\n".join(lines))
    hardware = [m.get("hardware", "") for m in meta.get("parts", [meta])]
    parts.append(f"Measured with `bench/claim.py` on {', '.join(dict.fromkeys(hardware))}; positive differences "
                 "favour SymLoRA (for perplexity, lower is better, so the sign is flipped). Where SymLoRA loses, "
                 "the number says by how much.")
    return "\n\n".join(parts)
