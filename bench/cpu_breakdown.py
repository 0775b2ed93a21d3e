"""Where SymLoRA's CPU step time over the floor goes: the fused path with parts taken out.

Each row is the whole training step of the speed benchmark's model (``adapter_speed.py``,
the vision preset's ViT, fp32, one thread) with SymLoRA's fused layer doing less and less
— wrong gradients, so only for timing:

* ``symlora``: the real thing;
* ``no-dQ``: the backward computes only the input gradient (dQ, dΛ are zeros): the
  backward's thin GEMMs g·Q, xᵀ·u, gᵀ·h and the small ops around them are gone;
* ``no-update``: as ``no-dQ`` and the forward does only x·Wᵀ + b (no fold, no x·Q): what is
  left is the autograd node in Python, the factors' casts and the optimizer;
* ``no-update-no-opt``: as ``no-update`` without the AdamW step.

All rows are timed in alternating rounds in one process (process CPU time, median), so a
busy shared machine slows them alike; the differences between rows are the parts' costs.

``--layers`` times something else in the same kind of rounds: the forward and the backward
of each adapted layer (qkv, proj) *inside* the real step, from module and autograd-node
hooks, for the floor, SymLoRA and LoRA — with ``--against REV`` also for a git revision's
``symlora/`` (an A/B of one layer's cost where it runs, between the other layers' GEMMs).

``--pieces`` splits SymLoRA's fused node inside the step: the functions of
:mod:`symlora.fast` it calls are wrapped with timers (per layer and phase), the rest of the
node (the base GEMM, dΛ, Python) is what its total leaves.

    python bench/cpu_breakdown.py --rounds 30
    python bench/cpu_breakdown.py --layers --against main --rounds 24
    python bench/cpu_breakdown.py --pieces --rounds 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import adapter_speed as bench  # noqa: E402
from layer_overhead import unpack_ref  # noqa: E402
from symlora import fast  # noqa: E402

ROWS = ("floor", "symlora", "no-dQ", "no-update", "no-update-no-opt")
_row = {"now": "symlora"}  # which row's step runs now (read by the patched functions below)
_grads, _linear = fast.symlora_grads, fast.low_rank_linear


def grads(xc: torch.Tensor, g: torch.Tensor, h: Any, weight: torch.Tensor, down: torch.Tensor, up: torch.Tensor,
          q: torch.Tensor, lam: torch.Tensor, kd: int, ku: int, fold: bool, need_x: bool, need_adapter: bool) -> Any:
    if _row["now"] in ("floor", "symlora"):
        return _grads(xc, g, h, weight, down, up, q, lam, kd, ku, fold, need_x, need_adapter)
    dx = torch.mm(g, fast.fold_weight(weight, down, kd, up, ku, g.dtype)) if _row["now"] == "no-dQ" \
        else torch.mm(g, weight)
    return dx, torch.zeros_like(q), torch.zeros_like(lam)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Any, down: torch.Tensor, up: torch.Tensor, kd: int, ku: int,
           fold: bool, need_h: bool) -> Any:
    if not _row["now"].startswith("no-update"):
        return _linear(x, weight, bias, down, up, kd, ku, fold, need_h)
    return F.linear(x, weight, bias), x.new_empty(x.shape[0], down.shape[1])


_VIEWS = ("ViewBackward0", "UnsafeViewBackward0", "ReshapeAliasBackward0")


def hook_layer_times(model: torch.nn.Module, times: dict[str, list[float]]) -> None:
    """Append each attention qkv / proj call's forward and backward CPU time (s) to
    ``times["fwd qkv"]`` … ``times["bwd proj"]``: forward from the module's pre- to its
    post-hook, backward from the output node's pre-hook to the post-hook of the first
    node below it that is not a view (the layer's GEMM node or our fused node)."""
    for name, module in model.named_modules():
        kind = "qkv" if name.endswith("attn.qkv") else "proj" if name.endswith("attn.proj") else None
        if kind is None:
            continue
        start: dict[str, float] = {}

        def pre(_m: Any, _a: Any, start: dict[str, float] = start) -> None:
            start["fwd"] = time.process_time()

        def post(_m: Any, _a: Any, out: torch.Tensor, start: dict[str, float] = start, kind: str = kind) -> None:
            times["fwd " + kind].append(time.process_time() - start["fwd"])
            node = out.grad_fn
            if node is None:
                return
            node.register_prehook(lambda _g: start.__setitem__("bwd", time.process_time()))
            while type(node).__name__ in _VIEWS:
                node = node.next_functions[0][0]
            node.register_hook(lambda _i, _o: times["bwd " + kind].append(time.process_time() - start["bwd"]))

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)


def layers_main(args: argparse.Namespace) -> None:
    """``--layers``: per-layer forward / backward time inside the step (see the docstring)."""
    configs = [("floor", "default"), ("symlora", "default"), ("lora", "default")]
    if args.against:
        ref_dir = tempfile.TemporaryDirectory()
        bench.REF["@" + args.against] = unpack_ref(args.against, Path(ref_dir.name))
        configs += [("symlora", "@" + args.against), ("lora", "@" + args.against)]
    work = bench.workloads(["vit-fmnist"], False, None)[0]
    parts = ("fwd qkv", "bwd qkv", "fwd proj", "bwd proj")
    steps: dict[tuple[str, str], Callable[[], None]] = {}
    times: dict[tuple[str, str], dict[str, list[float]]] = {}
    for method, variant in configs:
        trial = bench.Trial(work, method, variant, False, "train", args.r, torch.device("cpu"))
        times[method, variant] = {part: [] for part in ("step",) + parts}
        hook_layer_times(trial.model, times[method, variant])
        steps[method, variant] = trial.step
        for _ in range(3):
            trial.step()
        for ts in times[method, variant].values():
            ts.clear()
    for i in range(args.rounds):
        for j in range(len(configs)):
            config = configs[(i + j) % len(configs)]
            t0 = time.process_time()
            steps[config]()
            times[config]["step"].append(time.process_time() - t0)
    floor = statistics.median(times["floor", "default"]["step"])
    print(f"{work.name}, r = {args.r} on attention, fp32, 1 thread; median of {args.rounds} alternating rounds, "
          f"process CPU time; µs per call of one layer inside the step (6 calls of each per step)")
    print(f"{'':22s} {'step ms':>8s} {'×floor':>7s} " + " ".join(f"{part:>9s}" for part in parts))
    for config in configs:
        ts = times[config]
        step = statistics.median(ts["step"])
        print(f"{config[0] + ' ' + config[1]:22s} {step * 1e3:8.2f} {step / floor:7.3f} "
              + " ".join(f"{statistics.median(ts[part]) * 1e6:9.0f}" for part in parts))


def pieces_main(args: argparse.Namespace) -> None:
    """``--pieces``: SymLoRA's fused node split into the fast-path functions it calls."""
    work = bench.workloads(["vit-fmnist"], False, None)[0]
    trial = bench.Trial(work, "symlora", "default", False, "train", args.r, torch.device("cpu"))
    node = fast._SymLoraLinear
    times: dict[tuple[str, int, str], list[float]] = {}
    now: dict[str, Any] = {"phase": "fwd", "out": 0}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*a: Any, **kw: Any) -> Any:
            t0 = time.process_time()
            out = fn(*a, **kw)
            label = name + (" (accumulating)" if kw.get("into") is not None else "")
            times.setdefault((now["phase"], now["out"], label), []).append(time.process_time() - t0)
            return out
        return run

    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, *a: Any) -> Any:
        now.update(phase="fwd", out=int(weight.shape[0]))
        ctx.bench_out = now["out"]
        t0 = time.process_time()
        y = fwd(ctx, x, weight, *a)
        times.setdefault(("fwd", now["out"], "node in all"), []).append(time.process_time() - t0)
        return y

    def backward(ctx: Any, g: torch.Tensor) -> Any:
        now.update(phase="bwd", out=ctx.bench_out)
        t0 = time.process_time()
        grads = bwd(ctx, g)
        times.setdefault(("bwd", now["out"], "node in all"), []).append(time.process_time() - t0)
        return grads

    fwd, bwd = node.forward, node.backward
    node.forward, node.backward = staticmethod(forward), staticmethod(backward)  # type: ignore[method-assign,assignment]
    names = ("symlora_factors", "project", "fold_weight", "factor_grad_t", "scaled")
    real = {n: getattr(fast, n) for n in names}
    for n in names:
        setattr(fast, n, timed(n, real[n]))
    try:
        for _ in range(3):
            trial.step()
        times.clear()
        steps = []
        for _ in range(args.rounds):
            t0 = time.process_time()
            trial.step()
            steps.append(time.process_time() - t0)
    finally:
        node.forward, node.backward = staticmethod(fwd), staticmethod(bwd)  # type: ignore[method-assign,assignment]
        for n in names:
            setattr(fast, n, real[n])
    print(f"{work.name}, SymLoRA r = {args.r} on attention, fp32, 1 thread; step {statistics.median(steps) * 1e3:.2f} ms; "
          f"µs per call inside the step, median of {args.rounds} steps (6 calls per layer kind and step)")
    print("out features 576 = qkv, 192 = proj; symlora_factors includes its two scaled calls; the node's rest "
          "(base GEMM, dΛ, Python) is its total less the calls listed")
    for key in sorted(times, key=lambda k: (k[0] != "fwd", -k[1], k[2] == "node in all", k[2])):
        n = len(times[key]) // (6 * args.rounds)
        print(f"{key[0]} {key[1]:4d} {key[2]:30s} {statistics.median(times[key]) * 1e6:7.0f}" + (f"  (×{n})" if n > 1 else ""))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--layers", action="store_true", help="per-layer forward / backward time inside the step")
    p.add_argument("--against", default=None, metavar="REV", help="with --layers: also a git revision's symlora/")
    p.add_argument("--pieces", action="store_true", help="SymLoRA's fused node split into its fast-path calls")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.layers:
        layers_main(args)
        return
    if args.pieces:
        pieces_main(args)
        return
    if args.against:
        raise SystemExit("--against needs --layers")
    fast.symlora_grads, fast.low_rank_linear = grads, linear
    work = bench.workloads(["vit-fmnist"], False, None)[0]
    trials = {row: bench.Trial(work, "floor" if row == "floor" else "symlora", "default", False, "train", args.r,
                               torch.device("cpu")) for row in ROWS}
    trials["no-update-no-opt"].opt = None

    def step(row: str) -> float:
        _row["now"] = row
        t0 = time.process_time()
        trials[row].step()
        if trials[row].opt is None:  # as zero_grad(set_to_none=True) would
            for param in trials[row].params:
                param.grad = None
        return (time.process_time() - t0) * 1e3

    for row in ROWS:
        step(row), step(row)
    times: dict[str, list[float]] = {row: [] for row in ROWS}
    for i in range(args.rounds):
        for j in range(len(ROWS)):
            row = ROWS[(i + j) % len(ROWS)]
            times[row].append(step(row))
    floor = statistics.median(times["floor"])
    print(f"{work.name}, SymLoRA r = {args.r} on attention, fp32, 1 thread; median of {args.rounds} alternating "
          f"rounds, process CPU time")
    for row in ROWS:
        ms = statistics.median(times[row])
        print(f"{row:18s} {ms:8.2f} ms  {ms / floor:6.3f}× floor")


if __name__ == "__main__":
    main()
