"""Training-step time of adapters against the frozen-model floor, full fine-tuning and PEFT LoRA.

Every configuration runs in this one process on a freshly built model (random weights,
nothing is downloaded) and is timed as the median of ``--steps`` training steps after
``--warmup`` (CUDA events on a GPU); the AdamW step is included.  Ratios are taken between
configurations measured side by side here, never against numbers from elsewhere.

* ``floor``: every weight frozen, the input requires grad, so the backward still runs
  through the whole network — no adapter can be cheaper.
* ``full``: every weight trained.
* ``peft-lora``: PEFT's LoRA; ``lora`` / ``symlora``: this package's layers.
  Adapters sit on attention only, rank ``--r``, ``lora_alpha = 2r``, no dropout.

The input requires grad in *every* configuration, so all of them do the same work
outside the weights they train.  GPT-2's ``Conv1D`` layers are turned into ``nn.Linear``
(weights transposed) for every configuration alike, since our layers wrap ``nn.Linear``.

    python bench/adapter_speed.py                           # GPU: ViT-B/16 and GPT-2, eager and compiled
    python bench/adapter_speed.py --json > speed.json       # one JSON object per configuration
    python bench/adapter_speed.py --from-json speed.json    # the table again, from a saved run
    .venv/bin/python bench/adapter_speed.py                 # CPU: the vision preset's ViT, fp32, eager
    .venv/bin/python bench/adapter_speed.py --tiny --device cpu --compile yes   # smoke test of the GPU plan

Columns besides the ratios: ``min ms`` (fastest step), ``host ms`` (median time the host
takes to issue one step, without waiting for the GPU), and with ``--profile`` the GPU busy
time per step from torch.profiler (``GPU ms``) and its ratio to the floor's.  When the GPU
busy time is well under the step time, the step is bound by the host's kernel launches,
not by the GPU: the adapter's own GPU cost is then the ``GPU×fl`` column.

``--variants`` / ``--compiled-variants`` add rows for the fast path's alternatives (and the
plain autograd formula); on a shared CPU, ``--threads 1 --clock cpu`` times process CPU
time in interleaved rounds, which other work on the machine disturbs far less.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import symlora  # noqa: E402
from symlora.fast import fast_path_options  # noqa: E402

METHODS = ("floor", "full", "peft-lora", "lora", "symlora")
# name → fast-path options for the --variants rows (eager, SymLoRA and LoRA)
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": dict(enabled=False),
    "batched-blocks": dict(blocks="batched"),
    "dense-blocks": dict(blocks="dense"),
    "no-concat": dict(concat_forward="never"),
    "concat-bw": dict(concat_backward=True),
}
# which variants --variants runs for which method (blocks exist for SymLoRA only)
VARIANT_METHODS = {"plain": ("symlora", "lora"), "batched-blocks": ("symlora",), "dense-blocks": ("symlora",),
                   "no-concat": ("symlora", "lora"), "concat-bw": ("symlora", "lora")}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- workloads ------------------------------------------------------------------------------


@dataclass
class Workload:
    """A model builder, a batch maker and a loss; ``targets`` is the attention regex."""

    name: str
    build: Callable[[], nn.Module]
    make_batch: Callable[[torch.device], tuple[torch.Tensor, torch.Tensor]]
    loss: Callable[[nn.Module, tuple[torch.Tensor, torch.Tensor]], torch.Tensor]
    targets: str
    batch_desc: str


def conv1d_to_linear(model: nn.Module) -> nn.Module:
    """Replace transformers' ``Conv1D`` (weight in × out) by an equivalent ``nn.Linear``."""
    from transformers.pytorch_utils import Conv1D

    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, Conv1D):
                n_in, n_out = child.weight.shape
                lin = nn.Linear(n_in, n_out, device=child.weight.device, dtype=child.weight.dtype)
                with torch.no_grad():
                    lin.weight.copy_(child.weight.t())
                    lin.bias.copy_(child.bias)
                setattr(module, child_name, lin)
    return model


def image_workload(name: str, build: Callable[[], nn.Module], batch: int, chans: int, size: int,
                   classes: int) -> Workload:
    def make_batch(device):
        g = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(batch, chans, size, size, generator=g).to(device).requires_grad_(True)
        return x, torch.randint(0, classes, (batch,), generator=g).to(device)

    return Workload(
        name, build, make_batch, lambda m, b: F.cross_entropy(m(b[0]), b[1]),
        r".*\.attn\.(qkv|proj)", f"{batch}×{chans}×{size}×{size}",
    )


def gpt2_workload(batch: int, seq: int, tiny: bool) -> Workload:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=2, n_embd=64, n_head=2, n_positions=seq, vocab_size=1000) if tiny else GPT2Config()

    def build():
        return conv1d_to_linear(GPT2LMHeadModel(config))

    def make_batch(device):
        g = torch.Generator(device="cpu").manual_seed(0)
        emb = (torch.randn(batch, seq, config.n_embd, generator=g) * 0.02).to(device).requires_grad_(True)
        return emb, torch.randint(0, config.vocab_size, (batch, seq), generator=g).to(device)

    return Workload(
        "gpt2-124m" if not tiny else "gpt2-tiny", build, make_batch,
        lambda m, b: m(inputs_embeds=b[0], labels=b[1]).loss,
        r".*\.attn\.(c_attn|c_proj)", f"{batch}×{seq} tokens",
    )


def workloads(names: list[str], tiny: bool, batch: int | None) -> list[Workload]:
    out = []
    for name in names:
        if name == "vit-b16":
            import timm

            if tiny:
                from timm.models.vision_transformer import VisionTransformer

                out.append(image_workload("vit-tiny", lambda: VisionTransformer(
                    img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2), batch or 4, 3, 32, 1000))
            else:
                out.append(image_workload(
                    "vit-b16", lambda: timm.create_model("vit_base_patch16_224", pretrained=False),
                    batch or 64, 3, 224, 1000))
        elif name == "gpt2":
            out.append(gpt2_workload(batch or (2 if tiny else 16), 64 if tiny else 512, tiny))
        elif name == "vit-fmnist":
            from symlora.pretrain import build_vit

            out.append(image_workload("vit-fmnist-2.7m", build_vit, batch or 64, 1, 32, 10))
        else:
            raise SystemExit(f"unknown model {name!r}: vit-b16, gpt2, vit-fmnist")
    return out


# -- one configuration -------------------------------------------------------------------------


def prepare(method: str, model: nn.Module, targets: str, r: int) -> nn.Module:
    """Freeze / unfreeze / inject as ``method`` says; returns the model to run."""
    if method == "full":
        return model.requires_grad_(True)
    model.requires_grad_(False)
    if method == "floor":
        return model
    if method == "peft-lora":
        from peft import LoraConfig, get_peft_model

        return get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, lora_dropout=0.0))
    symlora.inject(model, symlora.AdapterConfig(method=method, r=r, lora_alpha=2 * r, target_modules=targets))
    return model


# Host clock for CPU timings: wall time, or this process's CPU time (``--clock cpu``), which
# a machine shared with other work disturbs far less (with one thread it is the work done).
clock: Callable[[], float] = time.perf_counter


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Trial:
    """One configuration, built and ready: ``step()`` runs one training step (or one
    inference forward); ``result()`` adds what was measured."""

    def __init__(self, work: Workload, method: str, variant: str, compiled: bool, phase: str, r: int,
                 device: torch.device, compile_mode: str = "default") -> None:
        self.work, self.method, self.variant, self.compiled, self.phase = work, method, variant, compiled, phase
        self.cuda_graphs = compiled and compile_mode == "reduce-overhead"
        self.device = device
        self.options = VARIANTS.get(variant, {})
        self.times: list[float] = []
        self.host_times: list[float] = []
        self.peak: int | None = None
        self.gc_collections: int | None = None
        self.profile: dict[str, Any] | None = None
        torch.manual_seed(0)
        with torch.device(device):
            model = work.build()
        if phase == "infer":
            if method == "symlora-merged":
                model = prepare("symlora", model, work.targets, r)
                symlora.merge(model)
            model.requires_grad_(False).eval()
        else:
            model = prepare(method, model, work.targets, r).train()
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=1e-5, fused=device.type == "cuda") if self.params else None
        self.batch = work.make_batch(device)
        self.runner = torch.compile(model, mode=compile_mode) if compiled else model

    @property
    def label(self) -> str:
        return f"{self.work.name} {self.phase} {self.method} [{self.variant}] {'compiled' if self.compiled else 'eager'}"

    def step(self) -> None:
        amp = self.device.type == "cuda"
        if self.cuda_graphs:  # a new step: the graphs' output buffers of the last one may be reused
            torch.compiler.cudagraph_mark_step_begin()
        with fast_path_options(**self.options), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
            if self.phase == "infer":
                with torch.no_grad():
                    x = self.batch[0].detach()
                    self.runner(inputs_embeds=x) if self.work.name.startswith("gpt2") else self.runner(x)
                return
            loss = self.work.loss(self.runner, self.batch)
        loss.backward()
        if self.opt is not None:
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        self.batch[0].grad = None

    def result(self) -> dict[str, Any]:
        return dict(phase=self.phase, step_ms=statistics.median(self.times), step_ms_min=min(self.times),
                    peak_mem_bytes=self.peak, trainable_params=sum(p.numel() for p in self.params),
                    host_ms=statistics.median(self.host_times) if self.host_times else None,
                    gc_collections=self.gc_collections, times_ms=[round(t, 3) for t in self.times],
                    profile=self.profile)

    def profile_steps(self, steps: int = 3, top: int = 12) -> None:
        """Kernel time per step under torch.profiler: GPU busy time, kernel count and the
        kernels that take longest — where the time over the floor goes."""
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
        synchronize(self.device)
        t0 = time.perf_counter()
        with profile(activities=activities) as prof:
            for _ in range(steps):
                self.step()
            synchronize(self.device)
        wall = (time.perf_counter() - t0) * 1e3 / steps
        kernels = [e for e in prof.key_averages() if e.device_type.name == "CUDA"] if self.device.type == "cuda" \
            else []
        busy = sum(e.self_device_time_total for e in kernels) / 1e3 / steps
        count = sum(e.count for e in kernels) / steps
        top_rows = sorted(kernels, key=lambda e: -e.self_device_time_total)[:top]
        self.profile = dict(
            wall_ms_per_step=wall, gpu_busy_ms_per_step=busy, kernels_per_step=count,
            top=[dict(name=e.key[:90], ms_per_step=e.self_device_time_total / 1e3 / steps, calls=e.count / steps)
                 for e in top_rows],
        )
        log(f"  profile {self.label}: wall {wall:.2f} ms/step, GPU busy {busy:.2f} ms, {count:.0f} kernels")
        for row in self.profile["top"]:
            log(f"    {row['ms_per_step']:7.3f} ms  ×{row['calls']:5.1f}  {row['name']}")


def measure_alone(trial: Trial, warmup: int, steps: int) -> None:
    """Warm up, then time ``steps`` steps back to back (CUDA events on a GPU), with the
    peak memory of the timed steps."""
    device = trial.device
    for _ in range(warmup):
        trial.step()
    synchronize(device)
    gc.collect()
    gc_before = sum(g["collections"] for g in gc.get_stats())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(steps)]
        for start, end in events:
            start.record()
            t0 = time.perf_counter()
            trial.step()
            trial.host_times.append((time.perf_counter() - t0) * 1e3)  # issuing only: no sync
            end.record()
        synchronize(device)
        trial.times = [a.elapsed_time(b) for a, b in events]
        trial.peak = torch.cuda.max_memory_allocated(device)
        trial.gc_collections = sum(g["collections"] for g in gc.get_stats()) - gc_before
        return
    for _ in range(steps):
        t0 = clock()
        trial.step()
        trial.times.append((clock() - t0) * 1e3)


def measure_interleaved(trials: list[Trial], warmup: int, steps: int) -> None:
    """Time the trials in rounds, one step each, rotating the order: a machine shared
    with other work then slows every configuration alike, and the medians stay comparable."""
    for trial in trials:
        for _ in range(warmup):
            trial.step()
    for i in range(steps):
        for j in range(len(trials)):
            trial = trials[(i + j) % len(trials)]
            synchronize(trial.device)
            t0 = clock()
            trial.step()
            synchronize(trial.device)
            trial.times.append((clock() - t0) * 1e3)


def cleanup(device: torch.device) -> None:
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# -- ratios, table, goals --------------------------------------------------------------------------


def add_ratios(rows: list[dict[str, Any]]) -> None:
    def ref(row, method, phase="train"):
        for other in rows:
            if (other["model"], other["compiled"], other["phase"], other["method"], other["variant"]) == (
                    row["model"], row["compiled"], phase, method, "default") and other.get("step_ms"):
                return other["step_ms"]
        return None

    for row in rows:
        if row["phase"] == "train":
            floor, peft = ref(row, "floor"), ref(row, "peft-lora")
        else:
            floor, peft = ref(row, "base", "infer"), None
        row["ratio_to_floor"] = row["step_ms"] / floor if floor else None
        row["ratio_to_peft"] = row["step_ms"] / peft if peft else None


def fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def table(rows: list[dict[str, Any]]) -> str:
    lines = []
    head = f"{'model':<16} {'phase':<5} {'method':<15} {'variant':<15} {'compiled':<8} {'step ms':>8} " \
           f"{'×floor':>7} {'×PEFT':>7} {'peak MiB':>9} {'Δ floor':>8} {'trainable':>11} {'min ms':>7} {'host ms':>7}" \
           f" {'GPU ms':>7} {'GPU×fl':>7}"
    lines.append(head)
    lines.append("-" * len(head))
    def gpu_ms(row):
        return (row.get("profile") or {}).get("gpu_busy_ms_per_step") if row else None

    for row in rows:
        floor_row = next((o for o in rows if o["model"] == row["model"] and o["method"] == "floor"
                          and o["compiled"] == row["compiled"] and o["phase"] == "train"), None)
        floor_peak = floor_row["peak_mem_bytes"] if floor_row else None
        peak = row.get("peak_mem_bytes")
        delta = (peak - floor_peak) / 2**20 if peak is not None and floor_peak is not None else None
        lines.append(
            f"{row['model']:<16} {row['phase']:<5} {row['method']:<15} {row['variant']:<15} "
            f"{'yes' if row['compiled'] else 'no':<8} {row['step_ms']:>8.2f} {fmt(row['ratio_to_floor'], '.3f'):>7} "
            f"{fmt(row['ratio_to_peft'], '.3f'):>7} {fmt(peak / 2**20 if peak else None, '.0f'):>9} "
            f"{fmt(delta, '+.0f'):>8} {row['trainable_params']:>11,} {fmt(row.get('step_ms_min'), '.2f'):>7} "
            f"{fmt(row.get('host_ms'), '.2f'):>7} {fmt(gpu_ms(row), '.2f'):>7} "
            f"{fmt(gpu_ms(row) / gpu_ms(floor_row) if gpu_ms(row) and gpu_ms(floor_row) else None, '.3f'):>7}"
        )
    return "\n".join(lines)


def goals(rows: list[dict[str, Any]]) -> str:
    """The issue's goals, checked against this run's rows."""
    out = []

    def get(model, method, compiled, phase="train"):
        return next((r for r in rows if (r["model"], r["method"], r["compiled"], r["phase"], r["variant"]) ==
                     (model, method, compiled, phase, "default")), None)

    for model in dict.fromkeys(r["model"] for r in rows):
        for compiled in (False, True):
            sym, lora, peft = (get(model, m, compiled) for m in ("symlora", "lora", "peft-lora"))
            tag = f"{model} {'compiled' if compiled else 'eager'}"
            if sym and sym["ratio_to_floor"] is not None:
                out.append(f"[{'x' if sym['ratio_to_floor'] <= 1.10 else ' '}] {tag}: symlora ≤ 1.10× floor "
                           f"({sym['ratio_to_floor']:.3f})")
            if sym and sym["ratio_to_peft"] is not None:
                out.append(f"[{'x' if sym['ratio_to_peft'] <= 0.80 else ' '}] {tag}: symlora ≤ 0.80× PEFT "
                           f"({sym['ratio_to_peft']:.3f})")
            floor = get(model, "floor", compiled)
            busy = [(r.get("profile") or {}).get("gpu_busy_ms_per_step") if r else None for r in (sym, floor, peft)]
            if busy[0] and busy[1]:  # the step can be bound by the host's launches; the GPU's own share
                out.append(f"[{'x' if busy[0] <= 1.10 * busy[1] else ' '}] {tag}: symlora GPU busy time ≤ 1.10× "
                           f"floor's ({busy[0] / busy[1]:.3f}; profiler)")
            if busy[0] and busy[2]:
                out.append(f"[{'x' if busy[0] <= 0.80 * busy[2] else ' '}] {tag}: symlora GPU busy time ≤ 0.80× "
                           f"PEFT's ({busy[0] / busy[2]:.3f}; profiler)")
            if sym and peft and sym["peak_mem_bytes"] and peft["peak_mem_bytes"]:
                ok = sym["peak_mem_bytes"] <= peft["peak_mem_bytes"]
                out.append(f"[{'x' if ok else ' '}] {tag}: symlora peak memory ≤ PEFT's "
                           f"({(sym['peak_mem_bytes'] - peft['peak_mem_bytes']) / 2**20:+.0f} MiB)")
            if lora and lora["ratio_to_peft"] is not None:
                out.append(f"[{'x' if lora['ratio_to_peft'] <= 1.0 else ' '}] {tag}: our lora ≤ PEFT "
                           f"({lora['ratio_to_peft']:.3f})")
        merged = get(model, "symlora-merged", False, "infer")
        if merged and merged["ratio_to_floor"] is not None:
            out.append(f"[{'x' if merged['ratio_to_floor'] <= 1.02 else ' '}] {model}: merged inference ≤ 1.02× base "
                       f"({merged['ratio_to_floor']:.3f})")
    return "\n".join(out)


def report(rows: list[dict[str, Any]]) -> str:
    order = {m: i for i, m in enumerate(METHODS + ("base", "symlora-merged"))}
    models = list(dict.fromkeys(r["model"] for r in rows))
    rows = sorted(rows, key=lambda r: (models.index(r["model"]), r["phase"] != "train", r["compiled"],
                                       r["variant"] != "default", order.get(r["method"], 99)))
    meta = rows[0] if rows else {}
    header = f"device: {meta.get('device', '?')}, torch {meta.get('torch', '?')} ({meta.get('versions', '?')}), " \
             f"dtype {meta.get('dtype', '?')}, " \
             f"median of {meta.get('steps', '?')} steps after {meta.get('warmup', '?')} warm-up " \
             f"({meta.get('timing', '?')}), r = {meta.get('r', '?')}"
    return f"{header}\n{table(rows)}\n\ngoals:\n{goals(rows)}"


# -- main ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (cuda when there is one)")
    p.add_argument("--models", default=None, help="comma list of vit-b16, gpt2, vit-fmnist "
                   "(default: vit-b16,gpt2 on a GPU, vit-fmnist on a CPU)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--compile-mode", choices=["default", "reduce-overhead", "max-autotune-no-cudagraphs"],
                   default="default", help="torch.compile mode of every compiled row (reduce-overhead: CUDA graphs)")
    p.add_argument("--compile", choices=["auto", "yes", "no", "only"], default="auto",
                   help="auto: eager and compiled on a GPU, eager only on a CPU")
    p.add_argument("--compile-full", choices=["yes", "no"], default="yes", help="also compile full fine-tuning")
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--batch", type=int, default=None, help="override every model's batch size")
    p.add_argument("--steps", type=int, default=None, help="timed steps (30 on a GPU, 20 on a CPU)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (10 on a GPU, 3 on a CPU)")
    p.add_argument("--tiny", action="store_true", help="tiny models, for smoke tests")
    p.add_argument("--variants", nargs="?", const=",".join(VARIANTS), default="",
                   help=f"add eager rows for the fast path's alternatives (comma list of {', '.join(VARIANTS)}; "
                        "all when given without a list)")
    p.add_argument("--compiled-variants", default="", help="like --variants, compiled (each one compile more)")
    p.add_argument("--models-variants", default=None, help="restrict variant rows to these models (comma list)")
    p.add_argument("--no-infer", action="store_true", help="skip the merged-inference rows")
    p.add_argument("--interleave", choices=["auto", "yes", "no"], default="auto",
                   help="time all configurations of a model in alternating rounds (auto: on a CPU, whose "
                        "cores other work may share); else each alone, back to back, with its peak memory")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="CPU timings: wall time, or process CPU time (robust on a shared machine)")
    p.add_argument("--profile", default="", help="comma list of methods whose default rows also get a "
                   "torch.profiler kernel summary (GPU busy time, kernel count, top kernels)")
    p.add_argument("--budget-s", type=float, default=None, help="skip configurations once this many seconds passed")
    p.add_argument("--out", default=None, help="also write the JSON here after every configuration")
    p.add_argument("--json", action="store_true", help="print JSON (one object per configuration) instead of the table")
    p.add_argument("--from-json", default=None, help="print the table of a saved --json / --out file and exit")
    args = p.parse_args(argv)

    if args.from_json:
        rows = json.loads(Path(args.from_json).read_text())
        add_ratios(rows)
        print(report(rows))
        return

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    gpu = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    global clock
    clock = time.process_time if args.clock == "cpu" and not gpu else time.perf_counter
    args.steps = args.steps or (30 if gpu else 20)
    args.warmup = args.warmup if args.warmup is not None else (10 if gpu else 3)
    names = (args.models or ("vit-b16,gpt2" if gpu else "vit-fmnist")).split(",")
    methods = [m for m in args.methods.split(",") if m]
    interleave = args.interleave == "yes" or (args.interleave == "auto" and not gpu)
    compile_modes = {"auto": [False, True] if gpu else [False], "yes": [False, True], "no": [False], "only": [True]}[
        args.compile]

    # Order (--budget-s cuts from the end): eager rows; compiled floor, PEFT and SymLoRA;
    # merged inference; variants; compiled LoRA; compiled full fine-tuning (the slowest
    # compile and the least interesting row).
    works = workloads(names, args.tiny, args.batch)
    ranked: list[tuple[int, tuple[Workload, str, str, bool, str]]] = []
    for compiled in compile_modes:
        for work in works:
            for method in methods:
                if compiled and method == "full" and args.compile_full == "no":
                    continue
                rank = 0 if not compiled else {"lora": 4, "full": 5}.get(method, 1)
                ranked.append((rank, (work, method, "default", compiled, "train")))
    if not args.no_infer:
        for work in works:
            ranked += [(2, (work, "base", "default", False, "infer")),
                       (2, (work, "symlora-merged", "default", False, "infer"))]
    variant_works = [w for w in works if args.models_variants is None
                     or any(w.name.startswith(m) for m in args.models_variants.split(","))]
    if args.variants:
        for work in variant_works:
            for name in args.variants.split(","):
                for method in VARIANT_METHODS[name]:
                    if method in methods:
                        ranked.append((3, (work, method, name, False, "train")))
    if args.compiled_variants and any(compile_modes):
        for work in variant_works:
            for name in args.compiled_variants.split(","):
                if "symlora" in methods:  # compiles are expensive: SymLoRA only
                    ranked.append((3, (work, "symlora", name, True, "train")))
    plan = [cfg for _, cfg in sorted(ranked, key=lambda rc: rc[0])]

    import peft
    import timm
    import transformers

    meta = dict(device=torch.cuda.get_device_name(device) if gpu else f"cpu ({torch.get_num_threads()} threads)",
                torch=torch.__version__, versions=f"timm {timm.__version__}, transformers {transformers.__version__}, "
                                                  f"peft {peft.__version__}", dtype="bf16 autocast" if gpu else "fp32", steps=args.steps,
                warmup=args.warmup, r=args.r,
                compile_mode=args.compile_mode,
                timing=("interleaved rounds" if interleave else "back to back")
                + (", process CPU time" if clock is time.process_time else ""))
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()

    def record(trial: Trial) -> None:
        row = dict(model=trial.work.name, method=trial.method, variant=trial.variant, compiled=trial.compiled,
                   batch=trial.work.batch_desc, **meta, **trial.result())
        rows.append(row)
        add_ratios(rows)
        log(f"{trial.label}: {row['step_ms']:.2f} ms (×floor {fmt(row['ratio_to_floor'], '.3f')})")
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=1))

    if interleave:  # one group per model and compile mode, all built up front
        groups: dict[tuple[str, bool], list[tuple]] = {}
        for cfg in plan:
            groups.setdefault((cfg[0].name, cfg[3]), []).append(cfg)
        for cfgs in groups.values():
            trials = [Trial(w, m, v, c, ph, args.r, device, args.compile_mode) for w, m, v, c, ph in cfgs]
            measure_interleaved(trials, args.warmup, args.steps)
            for trial in trials:
                record(trial)
            del trials
            cleanup(device)
    else:
        for work, method, variant, compiled, phase in plan:
            elapsed = time.perf_counter() - t_start
            label = f"{work.name} {phase} {method} [{variant}] {'compiled' if compiled else 'eager'}"
            if args.budget_s is not None and elapsed > args.budget_s:
                log(f"skip {label}: {elapsed:.0f} s > budget {args.budget_s:.0f} s")
                continue
            t0 = time.perf_counter()
            try:
                trial = Trial(work, method, variant, compiled, phase, args.r, device, args.compile_mode)
                measure_alone(trial, args.warmup, args.steps)
                if phase == "train" and variant == "default" and method in args.profile.split(","):
                    trial.profile_steps()
                record(trial)
            except Exception as exc:  # a failing configuration must not lose the others
                log(f"FAILED {label}: {type(exc).__name__}: {exc}")
            trial = None
            cleanup(device)
            log(f"  ({time.perf_counter() - t0:.0f} s, {time.perf_counter() - t_start:.0f} s in all)")
    add_ratios(rows)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    if args.json:
        print(json.dumps(rows, indent=1))
        log(report(rows))
    else:
        print(report(rows))


if __name__ == "__main__":
    main()
