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

    python bench/cpu_breakdown.py --rounds 30
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import adapter_speed as bench  # noqa: E402
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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--r", type=int, default=8)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
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
