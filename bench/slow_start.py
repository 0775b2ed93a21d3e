"""SymLoRA's slow start on a language model, and what fixes it: one table.

With Λ = 0 at init only Λ gets a gradient, and Adam's first step moves every λᵢ by about
lr·m (m: Λ's learning-rate multiplier, √n today).  LoRA (B = 0) moves every entry of B by
about lr instead.  This script measures what that does on SmolLM2-135M → Star Trek quotes
(the app's ``fortunes`` preset, ``q_proj`` + ``o_proj``, n = 576) and tries the fixes:

* Λ's multiplier m as a function of n: 1, √n (today), n, √(n/3) (LoRA's first-step ‖ΔW‖),
  n/√3 (LoRA's first-step loss decrease), 16 (a LoRA+-style constant);
* Q's init scale (n^¼, Λ lr ×1) and orthonormal Q;
* a non-zero Λ₀ whose ΔW is cancelled exactly at init — by a frozen copy
  (ΔW = s·(Q·Λ·Qᵀ − Q₀·Λ₀·Q₀ᵀ)) or by pairs (half the columns +λ₀, their twins −λ₀) —
  so that Q gets a gradient from the first step while the model starts at the base;
* a longer learning-rate warm-up.

Every configuration runs at every learning rate of a log grid (``--lrs``), for the
preset's 12 steps and 3× longer, over ``--seeds`` seeds.  The learning rate is chosen per
configuration and step count on a **validation split carved from the training quotes**
(mean over seeds); the held-out test quotes are only read at the chosen one.  SymLoRA runs
at the rank whose weight count equals LoRA's (r = 16 vs LoRA's 8 on square layers).

    python bench/slow_start.py --device cuda --jobs 12 --out bench/results/slow_start_h200.json
    python bench/slow_start.py --smoke            # a tiny random Llama, 2 steps: the plumbing
    python bench/slow_start.py --report bench/results/slow_start_h200.json   # the table again

Writes JSON (meta with the grid and the theory's first-step numbers, one row per run, the
summary at each configuration's chosen lr) and the Markdown table next to it.  ``--jobs N``
runs N single-threaded worker processes side by side on one device, so step times here are
not speed measurements.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing as mp
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from symlora.layers import LoraLayer, SymLoraLayer, symlora_delta  # noqa: E402
from symlora.lab.data import TextSplits, text_splits  # noqa: E402
from symlora.lab.tasks import LanguageModeling  # noqa: E402
from symlora.lab.train import RunConfig, lr_factor, prepare  # noqa: E402
from symlora.model import adapter_layers  # noqa: E402

log = logging.getLogger("slow_start")

FORTUNES_FILE = "/usr/share/games/fortunes/startrek"
LORA_RANK = 8
CHECKPOINTS = (0, 1, 2, 4, 12, 36)
DEFAULT_LRS = "5e-4,1e-3,2e-3,4e-3,8e-3,1.6e-2,3.2e-2,6.4e-2,1.28e-1"


# --------------------------------------------------------------------------- the configurations
@dataclass(frozen=True)
class Variant:
    """One row of the table.  ``lam_mult`` names Λ's learning-rate multiplier rule (see
    :func:`lambda_multiplier`); ``lam0`` > 0 starts Λ there with its ΔW cancelled exactly
    (``offset``: a frozen copy of Q₀, Λ₀; ``paired``: twin columns with ±λ₀)."""

    name: str
    method: str = "symlora"
    rank: int = 2 * LORA_RANK  # SymLoRA at LoRA's budget
    lam_mult: str = "sqrt_n"
    symlora_init: str = "gaussian"
    init_scale: str = "1"  # "1" or "n^0.25"
    lam0: float = 0.0
    start: str = "zero"  # "zero", "offset" or "paired"
    warmup_frac: float = 0.05  # the lab's default
    b_ratio: float = 1.0  # LoRA+: B's lr multiplier


VARIANTS: list[Variant] = [
    Variant("LoRA r=8", method="lora", rank=LORA_RANK),
    Variant("LoRA+ (B lr ×16)", method="lora", rank=LORA_RANK, b_ratio=16.0),
    Variant("SymLoRA, Λ lr ×√n (today)"),
    Variant("SymLoRA r=8 (equal rank), Λ lr ×√n", rank=LORA_RANK),
    Variant("Λ lr ×1", lam_mult="1"),
    Variant("Λ lr ×√(n/3) (LoRA's first-step ‖ΔW‖)", lam_mult="sqrt_n_3"),
    Variant("Λ lr ×n/√3 (LoRA's first-step descent)", lam_mult="n_sqrt3"),
    Variant("Λ lr ×n", lam_mult="n"),
    Variant("Λ lr ×16 (LoRA+-style constant)", lam_mult="16"),
    Variant("Q scale n^¼, Λ lr ×1", lam_mult="1", init_scale="n^0.25"),
    Variant("orthonormal Q", symlora_init="orthogonal"),
    Variant("Λ₀ = 1/√6, frozen offset", lam0=1 / math.sqrt(6), start="offset"),
    Variant("Λ₀ = ±1/(2√3) in twin pairs", lam0=1 / (2 * math.sqrt(3)), start="paired"),
    Variant("warm-up 25 %", warmup_frac=0.25),
    Variant("Λ lr ×n, warm-up 25 %", lam_mult="n", warmup_frac=0.25),
    Variant("Λ₀ frozen offset, Λ lr ×n", lam0=1 / math.sqrt(6), start="offset", lam_mult="n"),
]


def lambda_multiplier(rule: str, layer: SymLoraLayer) -> float:
    """Λ's learning-rate multiplier for ``layer`` under ``rule`` (n: the block side)."""
    n, out = layer.n, layer.out_features
    rules = {
        "1": 1.0, "16": 16.0, "sqrt_n": math.sqrt(n), "n": float(n),
        # ‖ΔW₁‖ of LoRA at the same rank and alpha: s·lr·√(out·r/3) (A's rows have norm² 1/3)
        "sqrt_n_3": math.sqrt(out / (3 * layer.k)),
        # the same first-order loss decrease as LoRA's first step (see first_step_theory)
        "n_sqrt3": n / math.sqrt(3),
    }
    return rules[rule]


def first_step_theory(n: int, r: int, s: float, m: float, *, lora: bool) -> dict[str, float]:
    """What Adam's first step (every trainable scalar moves by ≈ lr) does to one n×n ΔW,
    per unit learning rate, for a gradient G of the loss with respect to W.

    LoRA: B₁ = −lr·sign(G·Aᵀ), ΔW₁ = s·B₁·A, A's rows of norm² 1/3 (kaiming-uniform) and
    nearly orthogonal → ‖ΔW₁‖ ≈ s·lr·√(n·r/3).  SymLoRA: Λ₁ = −m·lr·sign(diag(QᵀGQ)),
    ΔW₁ = s·Q·diag(Λ₁)·Qᵀ with unit, nearly orthogonal columns → ‖ΔW₁‖ ≈ s·m·lr·√r.
    The first-order loss change is ⟨G, ΔW₁⟩: LoRA collects |gᵢ·aⱼ| over n·r entries, each
    of size ‖G‖/√(3n²)·√(2/π); SymLoRA |qᵢᵀ·G·qᵢ| over r entries, each ≈ ‖G‖/n·√(2/π) for
    a G without structure (Var qᵀGq = 2‖G_sym‖²/n², ‖G_sym‖² ≈ ‖G‖²/2).  ``descent`` is
    that decrease in units of √(2/π)·‖G‖·lr."""
    if lora:
        return {"norm_per_lr": s * math.sqrt(n * r / 3), "descent": s * r * math.sqrt(n) / math.sqrt(3 * n)}
    return {"norm_per_lr": s * m * math.sqrt(r), "descent": s * m * r / n}


# --------------------------------------------------------------------------- exact-zero starts
class OffsetSymLora(SymLoraLayer):
    """ΔW = s·(Q·diag(Λ)·Qᵀ − Q₀·diag(Λ₀)·Q₀ᵀ) with Q₀, Λ₀ frozen copies of the init:
    both terms are the same operations on the same numbers at init, so their difference
    is exactly 0 and the layer returns exactly the base output."""

    def uses_fused_path(self) -> bool:
        return False

    def delta(self, x: Tensor) -> Tensor:
        now = symlora_delta(x, self.lora_Q, self.lora_lambda * self.scaling, self.k_in, self.k_out)
        return now - symlora_delta(x, self.q0, self.lam0 * self.scaling, self.k_in, self.k_out)

    def delta_weight(self) -> Tensor:
        q, lam = self.lora_Q, self.lora_lambda * self.scaling
        q0, lam0 = self.q0, self.lam0 * self.scaling
        return (q * lam) @ q.T - (q0 * lam0) @ q0.T


class PairedSymLora(SymLoraLayer):
    """Columns r/2 … r start as twins of columns 0 … r/2 with the opposite λ: the two
    halves are computed apart, so at init they are exact negatives and ΔW·x = 0 exactly."""

    def uses_fused_path(self) -> bool:
        return False

    def delta(self, x: Tensor) -> Tensor:
        h = self.r // 2
        lam = self.lora_lambda * self.scaling
        a = symlora_delta(x, self.lora_Q[:, :h], lam[:h], 1, 1)
        return a + symlora_delta(x, self.lora_Q[:, h:], lam[h:], 1, 1)

    def delta_weight(self) -> Tensor:
        q, lam = self.lora_Q, self.lora_lambda * self.scaling
        return (q * lam) @ q.T


@torch.no_grad()
def set_start(model: torch.nn.Module, variant: Variant) -> None:
    """Put each SymLoRA layer of ``model`` in the variant's starting point (in place)."""
    if variant.method != "symlora" or variant.start == "zero":
        return
    for _, layer in adapter_layers(model):
        assert isinstance(layer, SymLoraLayer) and layer.k == 1, "the non-zero starts are written for square layers"
        if variant.start == "offset":
            layer.lora_lambda.fill_(variant.lam0)
            layer.register_buffer("q0", layer.lora_Q.detach().clone())
            layer.register_buffer("lam0", layer.lora_lambda.detach().clone())
            layer.__class__ = OffsetSymLora
        else:
            h = layer.r // 2
            layer.lora_Q[:, h:] = layer.lora_Q[:, :h]
            layer.lora_lambda[:h] = variant.lam0
            layer.lora_lambda[h:] = -variant.lam0
            layer.__class__ = PairedSymLora


def optimizer_groups(model: torch.nn.Module, variant: Variant, lr: float) -> list[dict[str, Any]]:
    """AdamW groups: Λ at lr·m(n) per layer, LoRA's B at lr·b_ratio, everything else at lr."""
    special: dict[int, float] = {}
    for _, layer in adapter_layers(model):
        if isinstance(layer, SymLoraLayer):
            special[id(layer.lora_lambda)] = lambda_multiplier(variant.lam_mult, layer)
        elif isinstance(layer, LoraLayer) and variant.b_ratio != 1.0:
            special[id(layer.lora_B.weight)] = variant.b_ratio
    groups: dict[float, list[torch.nn.Parameter]] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault(special.get(id(p), 1.0), []).append(p)
    return [{"params": ps, "lr": lr * mult, "peak_lr": lr * mult, "weight_decay": 0.0} for mult, ps in groups.items()]


# --------------------------------------------------------------------------- measurements
def delta_factors(layer: torch.nn.Module) -> tuple[Tensor, Tensor]:
    """ΔW = L·Rᵀ with thin L, R (n × k): what makes norms and spectra cheap."""
    s = layer.scaling
    if isinstance(layer, OffsetSymLora):
        q, q0 = layer.lora_Q, layer.q0
        return torch.cat([q * (s * layer.lora_lambda), -q0 * (s * layer.lam0)], 1), torch.cat([q, q0], 1)
    if isinstance(layer, SymLoraLayer):
        assert layer.k == 1
        return layer.lora_Q * (s * layer.lora_lambda), layer.lora_Q
    assert isinstance(layer, LoraLayer)
    return s * layer.lora_B.weight, layer.lora_A.weight.T


@torch.no_grad()
def delta_stats(model: torch.nn.Module) -> dict[str, float]:
    """‖ΔW‖_F over all adapted layers together, its per-layer mean, and the mean effective
    rank exp(entropy of σ/Σσ) (Roy & Vetterli) of the per-layer ΔW.  With ΔW = L·Rᵀ the
    squared singular values are the eigenvalues of (LᵀL)(RᵀR), a k×k matrix."""
    norms, ranks = [], []
    for _, layer in adapter_layers(model):
        left, right = (t.detach().double() for t in delta_factors(layer))
        gram = torch.stack([left.T @ left, right.T @ right]).cpu()  # k×k: the eigenproblem on the host
        if not bool(torch.isfinite(gram).all()):  # a diverging run (LAPACK would abort the process)
            norms.append(math.nan)
            continue
        sq = torch.linalg.eigvals(gram[0] @ gram[1]).real.clamp_min(0)
        norms.append(float(sq.sum().sqrt()))
        sv = sq.sqrt()
        if float(sv.sum()) > 0:
            prob = sv / sv.sum()
            ranks.append(float((-(prob * prob.clamp_min(1e-300).log()).sum()).exp()))
    out = {"dw_norm": math.sqrt(sum(x * x for x in norms)), "dw_layer_norm": statistics.fmean(norms)}
    if ranks:
        out["eff_rank"] = statistics.fmean(ranks)
    return out


@dataclass
class Job:
    variant: Variant
    lr: float
    steps: int
    seed: int
    batch_size: int = 8
    deadline: float = math.inf  # time.time() after which the job is skipped


_WORKER: dict[str, Any] = {}


def _init_worker(model_spec: str, fortunes_file: str, device: str, val_seed: int, eos_token: str | None = None) -> None:
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    _WORKER.update(base=load_base(model_spec, device, eos_token), splits=load_splits(fortunes_file, val_seed),
                   device=device)


def load_base(model_spec: str, device: str, eos_token: str | None = None):
    """``smollm2`` (the zoo's conversion; ``smollm2:DIR`` a converted folder) or ``tiny``
    (a 2-layer random Llama with SmolLM2's tokenizer: the plumbing check).  ``eos_token``
    replaces the token every quote ends with (the H200 grid's first parts ended them with
    ``<|im_start|>``, as an older transformers converted the GGUF: later seeds must too)."""
    from symlora.lab import zoo

    kind, _, where = model_spec.partition(":")
    if kind == "smollm2":
        bundle = zoo.load_smollm2(cache=where or None)
    elif kind == "tiny":
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        tok = AutoTokenizer.from_pretrained(where or str(zoo.smollm2_cache_dir()))
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
        bundle = zoo._text_model("tiny-llama", LlamaForCausalLM(cfg), tok, "cpu")
    else:
        raise ValueError(f"unknown model {model_spec!r}: smollm2[:DIR] or tiny[:TOKENIZER_DIR]")
    if eos_token is not None:
        if eos_token not in bundle.tokenizer.get_vocab():
            raise ValueError(f"--eos-token {eos_token!r} is not in the tokenizer's vocabulary")
        bundle.tokenizer.eos_token = eos_token
    bundle.model.to(device)
    return bundle


def load_splits(fortunes_file: str, val_seed: int) -> dict[str, list[str]]:
    """The preset's train/test split of the quotes (seed 0, 15 % test), and a validation
    split of 15 % carved from the training quotes; the test quotes are never used to choose."""
    text = Path(fortunes_file).read_text(encoding="latin-1")
    full = text_splits(text, name="fortunes:startrek", seed=0, test_fraction=0.15)
    train = text_splits("\n%\n".join(full.train), seed=val_seed, test_fraction=0.15)
    return {"train": train.train, "val": train.test, "test": full.test}


def run_job(job: Job) -> dict[str, Any]:
    """One training run; returns its row (curve of losses, checkpoints, final val/test)."""
    base, splits, device = _WORKER["base"], _WORKER["splits"], torch.device(_WORKER["device"])
    v = job.variant
    if time.time() > job.deadline:
        return {"variant": v.name, "lr": job.lr, "steps": job.steps, "seed": job.seed, "skipped": True}
    width = base.model.config.hidden_size
    cfg = RunConfig.from_preset("fortunes", method=v.method, r=v.rank, lora_alpha=16.0, lr=job.lr, steps=job.steps,
                                batch_size=job.batch_size, seed=job.seed, device=str(device), symlora_init=v.symlora_init,
                                init_scale=width ** 0.25 if v.init_scale == "n^0.25" else 1.0, warmup_frac=v.warmup_frac)
    data = TextSplits("fortunes:startrek/val", splits["train"], splits["val"], "")
    bundle, task, _ = prepare(cfg, base=base, dataset=data, device=device)
    test_task = LanguageModeling(bundle, TextSplits("test", splits["train"][:1], splits["test"], ""), device,
                                 max_tokens=cfg.max_tokens or 64, eval_limit=10_000)
    model = bundle.model
    set_start(model, v)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else torch.autocast("cpu", enabled=False))
    optimizer = torch.optim.AdamW(optimizer_groups(model, v, job.lr))
    batches = task.batches(cfg.batch_size, torch.Generator().manual_seed(cfg.seed))
    row: dict[str, Any] = {"variant": v.name, "lr": job.lr, "steps": job.steps, "seed": job.seed, "losses": [],
                           "checkpoints": {}}
    row["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def checkpoint(step: int) -> None:
        point = delta_stats(model)
        if step == 0 and "base_val_ppl" in _WORKER:  # every run starts exactly at the base
            point["val_ppl"] = _WORKER["base_val_ppl"]
        else:
            point["val_ppl"] = task.evaluate(model)
            if step == 0 and row.get("exact_at_init", True):
                _WORKER["base_val_ppl"] = point["val_ppl"]
        row["checkpoints"][str(step)] = point

    if "exact_at_init" not in _WORKER.setdefault("checked", {}).get(v.name, {}):  # the promise: at init the adapted model computes exactly what the base does
        probe = {k: v[:4].to(device) for k, v in task.test.items()}
        with torch.no_grad(), autocast:
            row["exact_at_init"] = torch.equal(model(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"]).logits,
                                               base.model(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"]).logits)
        _WORKER["checked"][v.name] = {"exact_at_init": row["exact_at_init"]}
    checkpoint(0)
    t0 = time.perf_counter()
    model.train()
    first_lr = None
    for step in range(job.steps):
        factor = lr_factor(step, job.steps, v.warmup_frac)
        for group in optimizer.param_groups:
            group["lr"] = group["peak_lr"] * factor
        if first_lr is None:
            first_lr = job.lr * factor
        with autocast:
            loss = task.loss(model, next(batches))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        row["losses"].append(value)
        if not math.isfinite(value):
            row["diverged_at"] = step + 1
            break
        if step + 1 in CHECKPOINTS:
            checkpoint(step + 1)
    row["first_lr"] = first_lr
    row["train_s"] = time.perf_counter() - t0
    if "diverged_at" in row:
        row["val_ppl"] = row["test_ppl"] = math.inf
    else:
        row["val_ppl"] = row["checkpoints"][str(job.steps)]["val_ppl"] if str(job.steps) in row["checkpoints"] \
            else task.evaluate(model)
        row["test_ppl"] = test_task.evaluate(model)
    return row


# --------------------------------------------------------------------------- choosing and reporting
def choose(mine: list[dict[str, Any]], seeds: list[int] | None = None) -> dict[str, Any] | None:
    """The lr with the lowest mean validation perplexity over ``seeds`` (default: every seed
    these runs have) among the rates run at all of those seeds — a wide grid at one seed can
    be joined by more seeds on a window around its best, and the choice is then made in the
    window.  None if no rate has every seed."""
    by_lr: dict[float, dict[int, dict[str, Any]]] = {}
    for r in mine:
        by_lr.setdefault(r["lr"], {})[r["seed"]] = r
    seeds = sorted({r["seed"] for r in mine}) if seeds is None else seeds
    window = [lr for lr in sorted(by_lr) if set(seeds) <= set(by_lr[lr])]
    if not window:
        return None
    mean_val = {lr: statistics.fmean(by_lr[lr][s]["val_ppl"] for s in seeds) for lr in window}
    best = min(mean_val, key=lambda lr: mean_val[lr])
    grid = {lr: statistics.fmean(r["val_ppl"] for r in d.values()) for lr, d in sorted(by_lr.items())}
    return {"seeds": seeds, "grid": grid, "window": window, "best": best, "chosen": [by_lr[best][s] for s in seeds]}


def window_jobs(rows: list[dict[str, Any]], variants: list[Variant], step_counts: list[int], seeds: list[int], *,
                width: int = 1, deadline: float = math.inf) -> tuple[list[Job], dict[str, dict[int, list[float]]]]:
    """More seeds where they matter: for each configuration and step count, the rates
    best·2^k (|k| ≤ ``width``) around its seed-0 best in ``rows`` (an earlier grid), at
    ``seeds``, plus seed 0 at a window rate the grid lacked (a best at the grid's edge) so
    that :func:`choose` can compare every rate of the window on the same seeds.  Returns the
    jobs and the windows (configuration → steps → rates)."""
    jobs: list[Job] = []
    windows: dict[str, dict[int, list[float]]] = {}
    for v in variants:
        for steps in step_counts:
            seed0 = [r for r in rows if r["variant"] == v.name and r["steps"] == steps and r["seed"] == 0]
            pick = choose(seed0, [0]) if seed0 else None
            if pick is None:
                log.warning("%s at %d steps has no seed-0 grid: no window", v.name, steps)
                continue
            rates = [float(f"{pick['best'] * 2.0 ** k:.6g}") for k in range(-width, width + 1)]
            windows.setdefault(v.name, {})[steps] = rates
            have = {r["lr"] for r in seed0}
            for lr in rates:
                for seed in ([0] if lr not in have and 0 not in seeds else []) + list(seeds):
                    jobs.append(Job(v, lr, steps, seed, deadline=deadline))
    return jobs, windows


def summarise(rows: list[dict[str, Any]], variants: list[Variant]) -> list[dict[str, Any]]:
    """Per configuration and step count: the chosen lr (:func:`choose`) and val/test there.
    ``lr_grid_val_ppl`` is the mean over the seeds each rate has.  The change against LoRA
    is against LoRA chosen on the same seeds (a one-seed row against LoRA's seed 0).  LoRA
    and the default run at more seeds also get a "seed 0 alone" row, the reference for the
    one-seed rows."""
    out = []
    refs = {VARIANTS[0].name, VARIANTS[2].name}
    for v in variants:
        for steps in sorted({r["steps"] for r in rows}):
            mine = [r for r in rows if r["variant"] == v.name and r["steps"] == steps]
            picks = [(v.name, choose(mine))] if mine else []
            if v.name in refs and picks and len(picks[0][1]["seeds"] if picks[0][1] else []) > 1:
                picks.append((f"{v.name}, seed 0 alone", choose(mine, [0])))
            for name, pick in picks:
                if pick is None:
                    continue
                chosen, grid, window, best = pick["chosen"], pick["grid"], pick["window"], pick["best"]
                entry = {
                    "variant": name, "config": asdict(v), "steps": steps, "seeds": pick["seeds"], "lr_grid_val_ppl": grid,
                    "lrs_at_all_seeds": window, "best_lr": best, "best_at_grid_edge": best in (min(grid), max(grid)),
                    "best_at_window_edge": len(window) < len(grid) and best in (window[0], window[-1]),
                    "val_ppl": statistics.fmean(r["val_ppl"] for r in chosen),
                    "val_ppl_std": statistics.stdev([r["val_ppl"] for r in chosen]) if len(chosen) > 1 else 0.0,
                    "test_ppl": statistics.fmean(r["test_ppl"] for r in chosen),
                    "test_ppl_std": statistics.stdev([r["test_ppl"] for r in chosen]) if len(chosen) > 1 else 0.0,
                    "trainable_params": chosen[0]["trainable_params"],
                    "early": {k: statistics.fmean(r["checkpoints"][k]["val_ppl"] for r in chosen)
                              for k in ("1", "2", "4") if all(k in r["checkpoints"] for r in chosen)},
                    "first_step_norm_per_lr": statistics.fmean([r["checkpoints"]["1"]["dw_layer_norm"] / r["first_lr"]
                                                                for r in chosen if "1" in r["checkpoints"]] or [math.nan]),
                }
                lora = choose([r for r in rows if r["variant"] == VARIANTS[0].name and r["steps"] == steps], pick["seeds"])
                if lora is not None:
                    ref_val = statistics.fmean(r["val_ppl"] for r in lora["chosen"])
                    ref_test = statistics.fmean(r["test_ppl"] for r in lora["chosen"])
                    entry |= {"lora_ref_lr": lora["best"], "val_vs_lora": entry["val_ppl"] / ref_val - 1,
                              "test_vs_lora": entry["test_ppl"] / ref_test - 1}
                out.append(entry)
    return out


def first_steps_table(rows: list[dict[str, Any]], summary: list[dict[str, Any]]) -> str:
    """‖ΔW‖, effective rank and loss over the first steps, seed 0 at each configuration's
    chosen lr for the 12-step schedule."""
    lines = ["| configuration | lr | ‖ΔW₁‖/lr per layer | ‖ΔW‖_F after step 1 / 2 / 4 / 12 | eff. rank 1 / 2 / 4 / 12 "
             "| train loss step 1 / 2 / 4 / 12 | val ppl 0 / 1 / 2 / 4 / 12 |", "|---|---|---|---|---|---|---|"]
    for s in summary:
        if s["steps"] != 12:
            continue
        row = next((r for r in rows if r["variant"] == s["variant"] and r["steps"] == 12 and r["lr"] == s["best_lr"]
                    and r["seed"] == 0), None)
        if row is None:
            continue
        cp = row["checkpoints"]
        keys = [k for k in ("1", "2", "4", "12") if k in cp]
        norms = " / ".join(f"{cp[k]['dw_norm']:.3g}" for k in keys)
        ranks = " / ".join(f"{cp[k]['eff_rank']:.1f}" if "eff_rank" in cp[k] else "—" for k in keys)
        losses = " / ".join(f"{row['losses'][int(k) - 1]:.2f}" for k in keys if int(k) <= len(row["losses"]))
        vals = " / ".join(f"{cp[k]['val_ppl']:.1f}" for k in ["0"] + keys)
        first = cp["1"]["dw_layer_norm"] / row["first_lr"] if "1" in cp else float("nan")
        lines.append(f"| {s['variant']} | {s['best_lr']:g} | {first:.1f} | {norms} | {ranks} | {losses} | {vals} |")
    return "\n".join(lines) + "\n"


def fixes_table(summary: list[dict[str, Any]]) -> str:
    """Val and test perplexity at each configuration's chosen lr (number of lrs tried in
    brackets), for every step count, with the change against LoRA at the same steps."""
    steps = sorted({s["steps"] for s in summary})
    head = "| configuration | " + " | ".join(f"{n} steps: lr (of) | val ppl (vs LoRA) | test ppl (vs LoRA)" for n in steps)
    lines = [head + " |", "|---|" + "---|---|---|" * len(steps)]

    def vs(s: dict[str, Any], key: str) -> str:
        return f" ({100 * s[key]:+.1f} %)" if key in s else ""

    for name in dict.fromkeys(s["variant"] for s in summary):
        cells = []
        for n in steps:
            s = next((x for x in summary if x["variant"] == name and x["steps"] == n), None)
            if s is None:
                cells.append("— | — | —")
                continue
            tried, window, k = len(s["lr_grid_val_ppl"]), len(s.get("lrs_at_all_seeds", s["lr_grid_val_ppl"])), len(s["seeds"])
            edge = ", edge" if s["best_at_grid_edge"] and tried > 1 else ""
            of = f"{tried}{edge} × 1 seed" if k == 1 else (f"{window} × {k} seeds" if window == tried
                                                          else f"{tried}{edge} × 1 seed, {window} × {k} seeds")
            vstd = f" ± {s['val_ppl_std']:.2f}" if k > 1 else ""
            std = f" ± {s['test_ppl_std']:.2f}" if k > 1 else ""
            cells.append(f"{s['best_lr']:g} ({of}) | {s['val_ppl']:.2f}{vstd}{vs(s, 'val_vs_lora')} "
                         f"| {s['test_ppl']:.2f}{std}{vs(s, 'test_vs_lora')}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write(out: Path, meta: dict[str, Any], rows: list[dict[str, Any]], variants: list[Variant]) -> str:
    summary = summarise(rows, variants)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "summary": summary, "runs": rows}, indent=1, default=str) + "\n")
    text = (f"Command: `{meta['command']}` on {meta['hardware']}, torch {meta['torch']}, {meta.get('wall_s', 0):.0f} s"
            f"{'' if meta.get('complete') else ' (cut short: partial grid)'}.\n\n"
            + fixes_table(summary) + "\nFirst steps (12-step schedule, seed 0, each at its chosen lr):\n\n"
            + first_steps_table(rows, summary))
    out.with_suffix(".md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2", help="smollm2[:CONVERTED_DIR] or tiny[:TOKENIZER_DIR]")
    p.add_argument("--fortunes-file", default=FORTUNES_FILE)
    p.add_argument("--device", default="cpu")
    p.add_argument("--lrs", default=DEFAULT_LRS, help="comma-separated learning-rate grid")
    p.add_argument("--steps", default="12,36", help="comma-separated step counts")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0, help="seeds first-seed … first-seed + seeds − 1")
    p.add_argument("--variants", help="comma-separated indices into the variant list (default: all)")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--time-budget", type=float, default=1e9, help="stop starting runs after this many seconds")
    p.add_argument("--val-seed", type=int, default=1)
    p.add_argument("--eos-token", help="end every quote with this token (default: the tokenizer's end-of-text); "
                   "'<|im_start|>' matches slow_start_h200.json's seed-0 grid")
    p.add_argument("--around", metavar="JSON",
                   help="instead of --lrs: each configuration's seed-0 best in this earlier grid and its neighbours ×2 apart")
    p.add_argument("--smoke", action="store_true", help="tiny model, 2 steps, 2 lrs, 1 seed")
    p.add_argument("--report", nargs="+", metavar="JSON",
                   help="join finished JSON files (parts of one grid) into --out and write its table; run nothing")
    p.add_argument("--out", default="bench/results/slow_start.json")
    args = p.parse_args(argv)
    variants = VARIANTS if not args.variants else [VARIANTS[int(i)] for i in args.variants.split(",")]
    if args.report:
        parts = [json.loads(Path(f).read_text()) for f in args.report]
        metas = [m for part in parts for m in part["meta"].get("parts", [part["meta"]])]
        meta = {"parts": metas, "command": " ; ".join(m["command"] for m in metas), "hardware": metas[0]["hardware"],
                "torch": metas[0]["torch"], "wall_s": max(m.get("wall_s", 0) for m in metas),  # parts run side by side
                "complete": all(m.get("complete") for m in metas), "theory_n576": metas[0].get("theory_n576")}
        sys.stdout.write(write(Path(args.out), meta, [r for part in parts for r in part["runs"]], variants))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.smoke:
        args.model, args.lrs, args.steps, args.seeds = "tiny", "1e-3,1e-2", "2", 1
    lrs = [float(x) for x in args.lrs.split(",")]
    step_counts = [int(x) for x in args.steps.split(",")]
    deadline = time.time() + args.time_budget
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    windows = None
    if args.around:
        jobs, windows = window_jobs(json.loads(Path(args.around).read_text())["runs"], variants, step_counts, seeds,
                                    deadline=deadline)
        jobs.sort(key=lambda j: -j.steps)  # the long runs first: the pool drains evenly
        lrs = sorted({j.lr for j in jobs})
    else:
        jobs = [Job(v, lr, n, seed, deadline=deadline) for seed in seeds for n in step_counts for v in variants for lr in lrs]
    hardware = (torch.cuda.get_device_name() if args.device.startswith("cuda")
                else f"{platform.processor() or 'CPU'} ({torch.get_num_threads()} threads)")
    meta: dict[str, Any] = {
        "command": " ".join(["python", "bench/slow_start.py"] + (argv if argv is not None else sys.argv[1:])),
        "hardware": hardware, "torch": torch.__version__, "lrs": lrs, "steps": step_counts, "seeds": args.seeds,
        "model": args.model, "eos_token": args.eos_token, "variants": [asdict(v) for v in variants],
        **({"windows": windows, "runs_planned": len(jobs)} if windows is not None else {}),
        "split": "preset's test (15 %, seed 0) untouched; validation = 15 % of the training quotes "
                 f"(seed {args.val_seed}); lr chosen on mean validation perplexity",
        "theory_n576": {
            "lora r=8 s=2": first_step_theory(576, 8, 2.0, 0, lora=True),
            **{f"symlora r=16 s=1 m={m}": first_step_theory(576, 16, 1.0, val, lora=False)
               for m, val in (("1", 1.0), ("sqrt(n)", 24.0), ("sqrt(n/3)", math.sqrt(192)), ("n/sqrt(3)", 576 / math.sqrt(3)),
                              ("n", 576.0))},
        },
    }
    t0 = time.perf_counter()
    if args.model.partition(":")[0] == "smollm2":  # convert the GGUF once here, not in every worker
        from symlora.lab import zoo

        zoo.prepare_smollm2(args.model.partition(":")[2] or None)
    rows: list[dict[str, Any]] = []
    last_write = 0.0
    ctx = mp.get_context("spawn")
    complete = True
    with ProcessPoolExecutor(args.jobs, mp_context=ctx, initializer=_init_worker,
                             initargs=(args.model, args.fortunes_file, args.device, args.val_seed, args.eos_token)) as pool:
        futures = {pool.submit(run_job, job): job for job in jobs}
        for fut in as_completed(futures):
            job = futures[fut]
            if fut.cancelled():
                continue
            try:
                row = fut.result()
            except Exception as exc:  # a broken run is reported, the grid goes on
                log.error("%s lr=%g steps=%d seed=%d failed: %r", job.variant.name, job.lr, job.steps, job.seed, exc)
                continue
            if row.get("skipped"):
                complete = False
                continue
            rows.append(row)
            log.info("%-44s lr=%-7g steps=%-3d seed=%d val %.2f test %.2f (%.1fs)", row["variant"], row["lr"],
                     row["steps"], row["seed"], row["val_ppl"], row["test_ppl"], row["train_s"])
            if time.perf_counter() - last_write > 5:  # a partial grid lands even if the process is killed
                write(Path(args.out), meta | {"wall_s": time.perf_counter() - t0, "complete": False}, rows, variants)
                last_write = time.perf_counter()
    sys.stdout.write(write(Path(args.out), meta | {"wall_s": time.perf_counter() - t0, "complete": complete}, rows, variants))
    return 0


if __name__ == "__main__":
    sys.exit(main())
