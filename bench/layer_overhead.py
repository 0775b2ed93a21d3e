"""Per-call cost of one adapter layer: this checkout's code against a git revision's, in one process.

Python work per forward (reading options, picking a layout, building autograd nodes) is
what a refactoring of the layers can add without changing any result.  It shows on tiny
layers, where the GEMMs cost next to nothing, so this script times a forward + backward
(``train``), a no-grad forward (``infer``) and the plain autograd formula (``plain``) of
single layers with a handful of rows.  The revision's ``symlora/`` is unpacked beside this
checkout as the package ``symlora_ref`` (the core imports itself relatively), so both
versions run in the same process and are timed in alternating rounds: a busy moment on a
shared machine hits both alike.  Process CPU time, median of the rounds.

    python bench/layer_overhead.py                 # against main
    python bench/layer_overhead.py --against HEAD~3 --rounds 80
    python bench/layer_overhead.py --shapes 192x576,192x192 --rows 1024 --r 8 --modes train   # the CPU ViT's layers
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import symlora  # noqa: E402
import symlora.fast  # noqa: E402

SHAPES = [("symlora", (16, 48)), ("symlora", (64, 16)), ("symlora", (16, 16)), ("lora", (16, 48))]


def unpack_ref(ref: str, into: Path) -> ModuleType:
    """The revision's ``symlora/`` as the package ``symlora_ref``."""
    archive = into / "ref.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), ref, "symlora"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    (into / "symlora").rename(into / "symlora_ref")
    sys.path.insert(0, str(into))
    import symlora_ref  # type: ignore[import-not-found]
    import symlora_ref.fast  # type: ignore[import-not-found]

    return symlora_ref


def parse_shape(text: str) -> tuple[int, int]:
    """``"192x576"`` → (192, 576)."""
    try:
        n_in, n_out = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"bad shape {text!r}: write IN x OUT, e.g. 192x576") from None
    return n_in, n_out


def make(pkg: Any, method: str, shape: tuple[int, int], r: int) -> nn.Module:
    torch.manual_seed(0)
    base = nn.Linear(*shape).requires_grad_(False)
    cls = pkg.SymLoraLayer if method == "symlora" else pkg.LoraLayer
    return cls(base, pkg.AdapterConfig(method=method, r=r))


_GRADS: dict[tuple[int, ...], torch.Tensor] = {}


def train(layer: nn.Module, x: torch.Tensor) -> None:
    """Forward and backward with a fixed dense output gradient (a ``.sum()`` loss would hand
    the backward a broadcast one, which its GEMMs copy first)."""
    y = layer(x)
    y.backward(_GRADS.setdefault(tuple(y.shape), torch.randn(y.shape)))


def infer(layer: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        layer(x)


MODES: dict[str, tuple[Callable[[nn.Module, torch.Tensor], None], bool]] = {
    "train": (train, True), "infer": (infer, True), "plain": (train, False)}  # (step, fast path on)


def time_calls(pkg: Any, layer: nn.Module, x: torch.Tensor, mode: str, calls: int) -> float:
    """µs per call of ``calls`` calls, process CPU time."""
    step, fast = MODES[mode]
    with pkg.fast.fast_path_options(enabled=fast):
        t = time.process_time()
        for _ in range(calls):
            step(layer, x)
        return (time.process_time() - t) / calls * 1e6


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--against", default="main", help="git revision to compare with (default: main)")
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--calls", type=int, default=200, help="calls per round")
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--r", type=int, default=4)
    p.add_argument("--shapes", default=None, help="comma list of IN x OUT SymLoRA layers, e.g. 192x576,192x192 "
                   "(default: four tiny layers, SymLoRA and LoRA)")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma list of {', '.join(MODES)}")
    args = p.parse_args(argv)
    shapes = SHAPES if args.shapes is None else [("symlora", parse_shape(s)) for s in args.shapes.split(",")]
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise SystemExit(f"unknown mode {unknown[0]!r}: {', '.join(MODES)}")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        pkgs = {args.against: unpack_ref(args.against, Path(tmp)), "this checkout": symlora}
        print(f"µs per call, median of {args.rounds} alternating rounds of {args.calls} calls, {args.rows} rows, "
              f"r = {args.r}, process CPU time, 1 thread")
        print(f"{'mode':6s} {'layer':16s} {args.against:>14s} {'this checkout':>14s}  ratio")
        for mode in modes:
            for method, shape in shapes:
                layers = {name: make(pkg, method, shape, args.r) for name, pkg in pkgs.items()}
                x = torch.randn(args.rows, shape[0], requires_grad=True)
                times: dict[str, list[float]] = {name: [] for name in pkgs}
                for name in pkgs:  # warm-up
                    time_calls(pkgs[name], layers[name], x, mode, args.calls)
                for _ in range(args.rounds):
                    for name in pkgs:
                        times[name].append(time_calls(pkgs[name], layers[name], x, mode, args.calls))
                ref, new = (statistics.median(times[name]) for name in pkgs)
                label = f"{method} {shape[0]}→{shape[1]}"
                print(f"{mode:6s} {label:16s} {ref:14.1f} {new:14.1f}  {new / ref:.3f}")


if __name__ == "__main__":
    main()
