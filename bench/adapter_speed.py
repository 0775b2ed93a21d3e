"""Training-step time of adapters against the frozen-model floor, full fine-tuning and PEFT LoRA.

Every configuration runs in this one process on a freshly built model (random weights,
nothing is downloaded); the (fused) AdamW step is included.  Ratios are taken between
configurations measured side by side here, never against numbers from elsewhere.

* ``floor``: every weight frozen, the input requires grad, so the backward still runs
  through the whole network — no adapter can be cheaper.
* ``full``: every weight trained.
* ``peft-lora``: PEFT's LoRA; ``lora`` / ``symlora``: this package's layers.  Adapters
  sit on attention (``vit-b16``, ``gpt2``, ``vit-fmnist``) or on qkv, proj, fc1 and fc2
  (``vit-b16-all``), rank ``--r``, ``lora_alpha = 2r``, no dropout.

The input requires grad in *every* configuration, so all of them do the same work
outside the weights they train.  GPT-2's ``Conv1D`` layers are turned into ``nn.Linear``
(weights transposed) for every configuration alike, since our layers wrap ``nn.Linear``.

    python bench/adapter_speed.py                           # GPU: ViT-B/16 and GPT-2, eager and compiled
    python bench/adapter_speed.py --json > speed.json       # one JSON object per configuration
    python bench/adapter_speed.py --from-json speed.json    # the table again, from a saved run
    .venv/bin/python bench/adapter_speed.py --threads 1 --clock cpu   # CPU: the vision preset's ViT, fp32
    .venv/bin/python bench/adapter_speed.py --tiny --device cpu --compile yes   # smoke test of the GPU plan

Timing: ``--repeats`` (3) repeats of ``--steps`` steps after ``--warmup``; ``step ms`` is
the median of the repeats' medians and ``min ms`` the fastest repeat's median.  Each table
says how its rows were timed: *interleaved rounds* (all configurations of a model built
up front and timed in rotating turns, so drifting machine speed hits them alike; the
default on a CPU) or *back to back* (one configuration at a time, freed before the next;
the default on a GPU).  CUDA events on a GPU; on a CPU, wall time or (``--clock cpu``)
this process's CPU time, which other work on a shared machine disturbs far less.

Other columns: ``peak MiB`` — peak allocated GPU memory over two steps, less what other
configurations held (``rsv MiB``, reserved memory, which holds the CUDA-graph pool, is
shown for back-to-back rows only: interleaved configurations share the cache);
``host ms`` — time the host takes to issue one step without waiting for the GPU; and from
torch.profiler (``--profile``, all training rows by default): ``GPU ms`` (GPU busy time
per step) and its ratio to the floor's, ``kern/st`` (CUDA kernels per step), ``ops/st``
(aten operators the host dispatched per step: what Python and the autograd engine called)
and ``Δops/ly`` (operators over the floor's, per adapted layer).  When the GPU busy time
is well under the step time, the step is bound by the host issuing kernels, not by the GPU.
``flt/st`` (CPU): minor page faults per timed step, the median — memory the C allocator gave
back to the OS and had to fault in again, which shows up in process CPU time.

``--variants`` / ``--compiled-variants`` add rows for the fast path's alternatives
(``add``: the update added beside x·Wᵀ instead of folded into W; ``plain``: the plain
autograd formula).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not
sys.path.insert(0, str(Path(__file__).resolve().parent))  # layer_overhead (--against)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import symlora  # noqa: E402

# minor page faults per step (CPU): memory the allocator gave back to the OS and touches again
resource: Any = importlib.import_module("resource") if sys.platform != "win32" else None
METHODS = ("floor", "full", "peft-lora", "lora", "symlora")
# name → fast-path options for the --variants rows (eager, SymLoRA and LoRA)
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": dict(enabled=False),
    "add": dict(fold="never"),
}
# which variants --variants runs for which method
VARIANT_METHODS = {"plain": ("symlora", "lora"), "add": ("symlora", "lora")}
ATTENTION, ALL4 = r".*\.attn\.(qkv|proj)", r".*\.(attn\.(qkv|proj)|mlp\.(fc1|fc2))"


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

    for module in list(model.modules()):
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
                   classes: int, targets: str = ATTENTION) -> Workload:
    def make_batch(device):
        g = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(batch, chans, size, size, generator=g).to(device).requires_grad_(True)
        return x, torch.randint(0, classes, (batch,), generator=g).to(device)

    return Workload(
        name, build, make_batch, lambda m, b: F.cross_entropy(m(b[0]), b[1]),
        targets, f"{batch}×{chans}×{size}×{size}",
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
        if name in ("vit-b16", "vit-b16-all"):  # -all: adapters on qkv, proj, fc1 and fc2
            import timm

            targets, suffix = (ALL4, "-all") if name == "vit-b16-all" else (ATTENTION, "")
            if tiny:
                from timm.models.vision_transformer import VisionTransformer

                out.append(image_workload("vit-tiny" + suffix, lambda: VisionTransformer(
                    img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2), batch or 4, 3, 32, 1000, targets))
            else:
                out.append(image_workload(
                    "vit-b16" + suffix, lambda: timm.create_model("vit_base_patch16_224", pretrained=False),
                    batch or 64, 3, 224, 1000, targets))
        elif name == "gpt2":
            out.append(gpt2_workload(batch or (2 if tiny else 16), 64 if tiny else 512, tiny))
        elif name == "vit-fmnist":
            from symlora.lab.pretrain import build_vit

            out.append(image_workload("vit-fmnist-2.7m", build_vit, batch or 64, 1, 32, 10))
        else:
            raise SystemExit(f"unknown model {name!r}: vit-b16, vit-b16-all, gpt2, vit-fmnist")
    return out


# -- one configuration -------------------------------------------------------------------------


# --against REV: that revision's ``symlora/`` (unpacked as the package ``symlora_ref``); its
# rows carry the variant name "@REV" and are timed in the same rounds as this checkout's
REF: dict[str, Any] = {}


def package(variant: str) -> Any:
    """The adapter package a row runs: this checkout's, or the --against revision's."""
    return REF[variant] if variant.startswith("@") else symlora


def prepare(method: str, model: nn.Module, targets: str, r: int, pkg: Any = symlora) -> nn.Module:
    """Freeze / unfreeze / inject as ``method`` says (with ``pkg``: this checkout's
    ``symlora`` or a revision's); returns the model to run."""
    if method == "full":
        return model.requires_grad_(True)
    model.requires_grad_(False)
    if method == "floor":
        return model
    if method == "peft-lora":
        from peft import LoraConfig, get_peft_model

        return get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, lora_dropout=0.0))
    pkg.inject(model, pkg.AdapterConfig(method=method, r=r, lora_alpha=2 * r, target_modules=targets))
    return model


# Host clock for CPU timings: wall time, or this process's CPU time (``--clock cpu``), which
# a machine shared with other work disturbs far less (with one thread it is the work done).
clock: Callable[[], float] = time.perf_counter


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def adapted_layers(model: nn.Module) -> int:
    """How many layers carry an adapter (ours or PEFT's)."""
    ours = tuple(pkg.AdapterLayer for pkg in (symlora, *REF.values()))
    return sum(1 for m in model.modules() if isinstance(m, ours) or hasattr(m, "lora_A")
               and isinstance(getattr(m, "lora_A", None), nn.ModuleDict))


def memory_now(device: torch.device) -> tuple[int, int]:
    """(allocated, reserved) bytes on a CUDA device; (0, 0) elsewhere."""
    if device.type != "cuda":
        return 0, 0
    return torch.cuda.memory_allocated(device), torch.cuda.memory_reserved(device)


class Trial:
    """One configuration, built and ready: ``step()`` runs one training step (or one
    inference forward); ``result()`` adds what was measured."""

    def __init__(self, work: Workload, method: str, variant: str, compiled: bool, phase: str, r: int,
                 device: torch.device, compile_mode: str = "default") -> None:
        self.work, self.method, self.variant, self.compiled, self.phase = work, method, variant, compiled, phase
        self.cuda_graphs = compiled and compile_mode == "reduce-overhead"
        self.device = device
        self.options = VARIANTS.get(variant, {})
        self.repeats: list[list[float]] = []  # step times (ms) of each timed repeat
        self.host_times: list[float] = []
        self.faults: list[int] = []  # minor page faults of each timed CPU step
        self.peak: int | None = None
        self.peak_reserved: int | None = None
        self.gc_collections: int | None = None
        self.profile: dict[str, Any] | None = None
        self.base_memory = memory_now(device)  # what other trials hold: not this one's
        torch.manual_seed(0)
        with torch.device(device):
            model = work.build()
        if phase == "infer":
            if method == "symlora-merged":
                model = prepare("symlora", model, work.targets, r)
                symlora.merge(model)
            model.requires_grad_(False).eval()
        else:
            model = prepare(method, model, work.targets, r, package(variant)).train()
        self.model = model
        self.adapted = adapted_layers(model)
        self.params = [p for p in model.parameters() if p.requires_grad]
        # the fused AdamW (one kernel per tensor) on every device and for every method alike
        self.opt = torch.optim.AdamW(self.params, lr=1e-5, fused=True) if self.params else None
        self.batch = work.make_batch(device)
        self.runner = torch.compile(model, mode=compile_mode) if compiled else model

    @property
    def label(self) -> str:
        return f"{self.work.name} {self.phase} {self.method} [{self.variant}] {'compiled' if self.compiled else 'eager'}"

    def step(self) -> None:
        amp = self.device.type == "cuda"
        if self.cuda_graphs:  # a new step: the graphs' output buffers of the last one may be reused
            torch.compiler.cudagraph_mark_step_begin()
        options = package(self.variant).fast.fast_path_options
        with options(**self.options), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
            if self.phase == "infer":
                with torch.no_grad():
                    x = self.batch[0].detach()
                    self.runner(inputs_embeds=x) if self.work.name.startswith("gpt2") else self.runner(x)
                return
            loss = self.work.loss(self.runner, self.batch)
            loss.backward()  # inside the options: the backward takes the same path as the forward
        if self.opt is not None:
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        self.batch[0].grad = None

    def measure_memory(self, steps: int = 2) -> None:
        """Peak bytes over ``steps`` steps, less what other trials held when this one was
        built: allocated tensors, and reserved memory (which holds the CUDA-graph pool)."""
        if self.device.type != "cuda":
            return
        synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        for _ in range(steps):
            self.step()
        synchronize(self.device)
        self.peak = torch.cuda.max_memory_allocated(self.device) - self.base_memory[0]
        self.peak_reserved = torch.cuda.max_memory_reserved(self.device) - self.base_memory[1]

    def result(self) -> dict[str, Any]:
        medians = [statistics.median(ts) for ts in self.repeats]
        times = [t for ts in self.repeats for t in ts]
        return dict(phase=self.phase, step_ms=statistics.median(medians), step_ms_min=min(medians),
                    repeat_ms=[round(m, 3) for m in medians], fastest_step_ms=min(times),
                    peak_mem_bytes=self.peak, peak_reserved_bytes=self.peak_reserved,
                    trainable_params=sum(p.numel() for p in self.params), adapted_layers=self.adapted,
                    host_ms=statistics.median(self.host_times) if self.host_times else None,
                    minor_faults_per_step=statistics.median(self.faults) if self.faults else None,
                    gc_collections=self.gc_collections, times_ms=[round(t, 3) for t in times],
                    profile=self.profile)

    def profile_steps(self, steps: int = 3, top: int = 12) -> None:
        """Under torch.profiler: GPU busy time and kernels per step, aten operators the host
        dispatched per step (top-level ones: what Python and the autograd engine called), and
        the kernels that take longest — where the time over the floor goes."""
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
        busy = sum(e.self_device_time_total for e in kernels) / 1e3 / steps if kernels else None
        count = sum(e.count for e in kernels) / steps if kernels else None

        def top_level(e) -> bool:
            p = e.cpu_parent
            while p is not None:
                if p.name.startswith("aten::"):
                    return False
                p = p.cpu_parent
            return True

        ops = sum(1 for e in prof.events() if e.name.startswith("aten::") and e.device_type.name == "CPU"
                  and top_level(e)) / steps
        top_rows = sorted(kernels, key=lambda e: -e.self_device_time_total)[:top]
        self.profile = dict(
            wall_ms_per_step=wall, gpu_busy_ms_per_step=busy, kernels_per_step=count, aten_ops_per_step=ops,
            top=[dict(name=e.key[:90], ms_per_step=e.self_device_time_total / 1e3 / steps, calls=e.count / steps)
                 for e in top_rows],
        )
        log(f"  profile {self.label}: wall {wall:.2f} ms/step, GPU busy {fmt(busy, '.2f')} ms, "
            f"{fmt(count, '.0f')} kernels, {ops:.0f} aten ops")
        for row in self.profile["top"]:
            log(f"    {row['ms_per_step']:7.3f} ms  ×{row['calls']:5.1f}  {row['name']}")


def timed_steps(trial: Trial, steps: int) -> list[float]:
    """``steps`` steps back to back: CUDA events on a GPU (and the host's issue time), the
    host clock elsewhere."""
    if trial.device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(steps)]
        for start, end in events:
            start.record()
            t0 = time.perf_counter()
            trial.step()
            trial.host_times.append((time.perf_counter() - t0) * 1e3)  # issuing only: no sync
            end.record()
        synchronize(trial.device)
        return [a.elapsed_time(b) for a, b in events]
    times = []
    for _ in range(steps):
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource else 0
        t0 = clock()
        trial.step()
        times.append((clock() - t0) * 1e3)
        if resource:
            trial.faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
    return times


def measure_alone(trial: Trial, warmup: int, steps: int, repeats: int) -> None:
    """Warm up, take the peak memory, then time ``repeats`` × ``steps`` steps back to back."""
    for _ in range(warmup):
        trial.step()
    trial.measure_memory()
    gc.collect()
    gc_before = sum(g["collections"] for g in gc.get_stats())
    for _ in range(repeats):
        trial.repeats.append(timed_steps(trial, steps))
    trial.gc_collections = sum(g["collections"] for g in gc.get_stats()) - gc_before


def measure_interleaved(trials: list[Trial], warmup: int, steps: int, repeats: int) -> None:
    """Time the trials in rounds of a few steps each, rotating the order: a machine shared
    with other work then slows every configuration alike, and the medians stay comparable.
    (Each trial's warm-up and peak memory were taken when it was built.)"""
    chunk = 1 if trials and trials[0].device.type != "cuda" else 5  # on a GPU: a few steps per turn
    for rep in range(repeats):
        times: list[list[float]] = [[] for _ in trials]
        for i in range(0, steps, chunk):
            for j in range(len(trials)):
                jj = (i // chunk + j + rep) % len(trials)
                synchronize(trials[jj].device)
                times[jj] += timed_steps(trials[jj], min(chunk, steps - i))
        for trial, ts in zip(trials, times):
            trial.repeats.append(ts)


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


def _mode(row: dict[str, Any]) -> str:
    """How a row was run: eager, compiled, or compiled with CUDA graphs."""
    if not row["compiled"]:
        return "eager"
    return "CUDA graphs" if row.get("compile_mode") == "reduce-overhead" else "compiled"


def _floor_row(rows: list[dict[str, Any]], row: dict[str, Any]) -> dict[str, Any] | None:
    method = "base" if row["phase"] == "infer" else "floor"
    return next((o for o in rows if (o["model"], o["method"], o["compiled"], o["phase"], o["variant"]) ==
                 (row["model"], method, row["compiled"], row["phase"], "default")), None)


def _prof(row: dict[str, Any] | None, key: str) -> float | None:
    return (row.get("profile") or {}).get(key) if row else None


def table(rows: list[dict[str, Any]]) -> str:
    """One table per way of running (eager / compiled / CUDA graphs); its title says how the
    steps were timed.  Peak memory: allocated bytes, and reserved (which holds the CUDA-graph
    pool) where it differs; both less what other configurations held."""
    out = []
    head = (f"{'model':<14} {'phase':<5} {'method':<14} {'variant':<8} {'step ms':>8} {'min ms':>7} {'×floor':>7} "
            f"{'×PEFT':>7} {'peak MiB':>9} {'rsv MiB':>8} {'trainable':>11} {'host ms':>7} {'GPU ms':>7} "
            f"{'GPU×fl':>7} {'kern/st':>7} {'ops/st':>7} {'Δops/ly':>7} {'flt/st':>7}")
    for mode in dict.fromkeys(_mode(r) for r in rows):
        group = [r for r in rows if _mode(r) == mode]
        meta = group[0]
        out.append(f"\n{mode}: {meta.get('timing', '?')}; median of {meta.get('repeats', 1)} repeats' medians "
                   f"({meta.get('steps', '?')} steps each, after {meta.get('warmup', '?')} warm-up), min = fastest "
                   f"repeat")
        out.append(head)
        out.append("-" * len(head))
        for row in group:
            floor = _floor_row(rows, row)
            peak, rsv = row.get("peak_mem_bytes"), row.get("peak_reserved_bytes")
            back_to_back = str(row.get("timing", "")).startswith("back to back")
            gpu, gpu_floor = _prof(row, "gpu_busy_ms_per_step"), _prof(floor, "gpu_busy_ms_per_step")
            ops, ops_floor = _prof(row, "aten_ops_per_step"), _prof(floor, "aten_ops_per_step")
            per_layer = (ops - ops_floor) / row["adapted_layers"] if ops is not None and ops_floor is not None \
                and row.get("adapted_layers") else None
            out.append(
                f"{row['model']:<14} {row['phase']:<5} {row['method']:<14} {row['variant']:<8} {row['step_ms']:>8.2f} "
                f"{fmt(row.get('step_ms_min'), '.2f'):>7} {fmt(row['ratio_to_floor'], '.3f'):>7} "
                f"{fmt(row['ratio_to_peft'], '.3f'):>7} {fmt(peak / 2**20 if peak else None, '.0f'):>9} "
                f"{fmt(rsv / 2**20 if rsv and back_to_back else None, '.0f'):>8} {row['trainable_params']:>11,} "
                f"{fmt(row.get('host_ms'), '.2f'):>7} {fmt(gpu, '.2f'):>7} "
                f"{fmt(gpu / gpu_floor if gpu and gpu_floor else None, '.3f'):>7} "
                f"{fmt(_prof(row, 'kernels_per_step'), '.0f'):>7} {fmt(ops, '.0f'):>7} {fmt(per_layer, '.1f'):>7} "
                f"{fmt(row.get('minor_faults_per_step'), '.0f'):>7}"
            )
    return "\n".join(out)


def goals(rows: list[dict[str, Any]]) -> str:
    """Issue 18's goals, checked against this run's rows."""
    out = []

    def get(model, method, mode, phase="train"):
        return next((r for r in rows if (r["model"], r["method"], _mode(r), r["phase"], r["variant"]) ==
                     (model, method, mode, phase, "default")), None)

    def check(ok: bool, text: str) -> None:
        out.append(f"[{'x' if ok else ' '}] {text}")

    for model in dict.fromkeys(r["model"] for r in rows):
        for mode in dict.fromkeys(_mode(r) for r in rows):
            sym, peft, floor = (get(model, m, mode) for m in ("symlora", "peft-lora", "floor"))
            if not (sym and floor):
                continue
            tag = f"{model} {mode}"
            gpu = sym["device"] != "cpu" and not str(sym["device"]).startswith("cpu")
            ratio = sym["ratio_to_floor"]
            if not gpu:
                check(ratio <= 1.06, f"{tag}: symlora ≤ 1.06× floor ({ratio:.3f})")
                if peft:
                    over, peft_over = sym["step_ms"] - floor["step_ms"], peft["step_ms"] - floor["step_ms"]
                    check(over <= peft_over / 3, f"{tag}: symlora's time over the floor ≤ ⅓ of PEFT's "
                                                 f"({over:.2f} vs {peft_over:.2f} ms: {over / peft_over:.2f})")
            elif mode == "CUDA graphs":
                check(ratio <= 1.08, f"{tag}: symlora ≤ 1.08× floor ({ratio:.3f})")
            elif mode == "eager" and sym["ratio_to_peft"] is not None:
                check(sym["ratio_to_peft"] <= 1.0, f"{tag}: symlora ≤ PEFT ({sym['ratio_to_peft']:.3f})")
            if peft and sym.get("peak_mem_bytes") and peft.get("peak_mem_bytes"):
                a = max(sym["peak_mem_bytes"], sym.get("peak_reserved_bytes") or 0) if mode == "CUDA graphs" \
                    else sym["peak_mem_bytes"]
                b = max(peft["peak_mem_bytes"], peft.get("peak_reserved_bytes") or 0) if mode == "CUDA graphs" \
                    else peft["peak_mem_bytes"]
                check(a <= b, f"{tag}: symlora peak memory ≤ PEFT's ({(a - b) / 2**20:+.0f} MiB)")
        merged = get(model, "symlora-merged", "eager", "infer")
        if merged and merged["ratio_to_floor"] is not None:
            check(merged["ratio_to_floor"] <= 1.02, f"{model}: merged inference ≤ 1.02× base "
                                                    f"({merged['ratio_to_floor']:.3f})")
    return "\n".join(out)


def report(rows: list[dict[str, Any]]) -> str:
    order = {m: i for i, m in enumerate(METHODS + ("base", "symlora-merged"))}
    models = list(dict.fromkeys(r["model"] for r in rows))
    rows = sorted(rows, key=lambda r: (r["compiled"], models.index(r["model"]), r["phase"] != "train",
                                       r["variant"] != "default", order.get(r["method"], 99)))
    meta = rows[0] if rows else {}
    header = f"device: {meta.get('device', '?')}, torch {meta.get('torch', '?')} ({meta.get('versions', '?')}), " \
             f"dtype {meta.get('dtype', '?')}, r = {meta.get('r', '?')}"
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
    p.add_argument("--steps", type=int, default=None, help="timed steps per repeat (30 on a GPU, 20 on a CPU)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats: step_ms is the median of their medians, "
                   "step_ms_min the smallest")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (10 on a GPU, 3 on a CPU)")
    p.add_argument("--tiny", action="store_true", help="tiny models, for smoke tests")
    p.add_argument("--variants", nargs="?", const=",".join(VARIANTS), default="",
                   help=f"add eager rows for the fast path's alternatives (comma list of {', '.join(VARIANTS)}; "
                        "all when given without a list)")
    p.add_argument("--against", default=None, metavar="REV",
                   help="also time SymLoRA and LoRA from git revision REV's symlora/ (rows with variant @REV), "
                        "interleaved with this checkout's: an A/B of the core in one process")
    p.add_argument("--compiled-variants", default="", help="like --variants, compiled (each one compile more)")
    p.add_argument("--models-variants", default=None, help="restrict variant rows to these models (comma list)")
    p.add_argument("--no-infer", action="store_true", help="skip the merged-inference rows")
    p.add_argument("--interleave", choices=["auto", "yes", "no"], default="auto",
                   help="time all configurations of a model in alternating rounds (auto: on a CPU, whose "
                        "cores other work may share); else each alone, back to back, with its peak memory")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="CPU timings: wall time, or process CPU time (robust on a shared machine)")
    p.add_argument("--profile", default="all", help="comma list of methods whose default training rows also get "
                   "a torch.profiler summary (GPU busy time, kernels and aten operators per step, top kernels); "
                   "'all' (default) or 'none'")
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
    if args.against:
        from layer_overhead import unpack_ref

        ref_dir = tempfile.TemporaryDirectory()
        REF["@" + args.against] = unpack_ref(args.against, Path(ref_dir.name))
        for work in variant_works:
            for method in ("lora", "symlora"):
                if method in methods:
                    ranked.append((0, (work, method, "@" + args.against, False, "train")))
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
                warmup=args.warmup, repeats=args.repeats, r=args.r,
                compile_mode=args.compile_mode,
                timing=("interleaved rounds" if interleave else "back to back")
                + (", process CPU time" if clock is time.process_time else ""))
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()

    def wants_profile(trial: Trial) -> bool:
        return trial.phase == "train" and trial.variant == "default" and (
            args.profile == "all" or trial.method in args.profile.split(","))

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
            trials = []
            for w, m, v, c, ph in cfgs:  # built, warmed up and measured for memory one after the other
                trial = Trial(w, m, v, c, ph, args.r, device, args.compile_mode)
                for _ in range(args.warmup):
                    trial.step()
                trial.measure_memory()
                trials.append(trial)
            measure_interleaved(trials, 0, args.steps, args.repeats)
            for trial in trials:
                if wants_profile(trial):
                    trial.profile_steps()
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
                measure_alone(trial, args.warmup, args.steps, args.repeats)
                if wants_profile(trial):
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
