"""A class at once: simulated students training at the same time, measured.

Two levels (one function each; ``--level`` picks):

* ``app`` (:func:`app_level`) — a real SymLoRA Lab server (``python -m app``) started by this
  script on 127.0.0.1, and students as ``gradio_client`` sessions calling ``/train`` as a
  browser does.  Scenarios: (a) many sessions on one teacher link (the same settings),
  (b) students with their own seeds, (c) mixed methods and ranks, plus a soak of many short
  runs with the server's memory sampled.  Reported per scenario: time to the first update
  that carries the run's first event (p50/p95), time to finish (p50/p95/max), runs per
  minute, the server's peak RSS — and the same runs one at a time (the serial baseline)
  in the same invocation.
* ``engine`` (:func:`engine_level`) — the multi-run engine directly (no Gradio), e.g. on a GPU.

    PYTHONPATH=$PWD python bench/classroom.py --level app --out bench/results/classroom_app.json
    PYTHONPATH=$PWD python bench/classroom.py --level app --teacher 30 --teacher-steps 100 \\
        --own 10 --mixed 10 --steps 5 --serial 3 --soak 100

Timings on a shared CPU are noisy: compare the crowd with the serial baseline of the same
invocation (the ratios), not numbers across invocations.
"""

from __future__ import annotations

import argparse
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MIXED = [("symlora", 8), ("lora", 8), ("symlora", 4), ("lora", 2), ("head-only", 8), ("symlora", 16)]


# --------------------------------------------------------------------------- helpers
def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0–100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


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

    def __init__(self, env: dict[str, str] | None = None, timeout: float = 300) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        child_env = os.environ | {"GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT)} | (env or {})
        self.log = tempfile.NamedTemporaryFile("w", prefix="classroom-server-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([sys.executable, "-m", "app", "--port", str(self.port)], cwd=ROOT,
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


def train_args(steps: int, seed: int = 0, method: str = "symlora", r: int = 8) -> list[Any]:
    """``/train``'s positional values for a digits run (the preset's other settings)."""
    from app.settings import Settings
    from symlora.presets import get_preset

    s = Settings.from_preset(get_preset("digits")).replace(steps=steps, seed=seed, method=method, r=r)
    values = s.values()
    values[6] = ",".join(s.targets)
    return values


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


def crowd(url: str, arglists: list[list[Any]], sampler: RssSampler) -> dict[str, Any]:
    """All ``arglists`` submitted at once, one session each; the scenario's numbers."""
    start = threading.Event()
    outs: list[dict[str, Any]] = [{} for _ in arglists]
    threads = [threading.Thread(target=student, args=(url, a, start, o), daemon=True) for a, o in zip(arglists, outs)]
    for t in threads:
        t.start()
    time.sleep(min(30.0, 0.3 * len(threads)))  # let every session connect first (not timed)
    t0 = time.perf_counter()
    start.set()
    for t in threads:
        t.join(timeout=3600)
    wall = time.perf_counter() - t0
    return summarize(outs, wall) | {"peak_rss_mb": sampler.peak(t0) / 2**20}


def serial(url: str, arglists: list[list[Any]], sampler: RssSampler) -> dict[str, Any]:
    """The same runs one at a time, one session each (the baseline)."""
    outs: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for args in arglists:
        out: dict[str, Any] = {}
        start = threading.Event()
        start.set()
        student(url, args, start, out)
        outs.append(out)
    wall = time.perf_counter() - t0
    return summarize(outs, wall) | {"peak_rss_mb": sampler.peak(t0) / 2**20}


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


def soak(url: str, runs: int, steps: int, wave: int, sampler: RssSampler) -> dict[str, Any]:
    """``runs`` short runs with distinct seeds, ``wave`` at a time; the server's RSS after each wave."""
    rss_after: list[float] = []
    t0 = time.perf_counter()
    done = 0
    for first in range(0, runs, wave):
        seeds = range(1000 + first, 1000 + min(runs, first + wave))
        result = crowd(url, [train_args(steps, seed=s) for s in seeds], sampler)
        done += result["done"]
        time.sleep(1.0)
        rss_after.append(rss_bytes(sampler.pid) / 2**20)
    tail = rss_after[len(rss_after) // 2:]
    return {"runs": runs, "done": done, "steps": steps, "wave": wave, "wall_s": time.perf_counter() - t0,
            "rss_after_each_wave_mb": [round(x, 1) for x in rss_after],
            "growth_second_half_mb": (max(tail) - min(tail)) if tail else None,
            "growth_first_to_last_mb": rss_after[-1] - rss_after[0] if rss_after else None}


# --------------------------------------------------------------------------- the two levels
def app_level(args: argparse.Namespace) -> dict[str, Any]:
    """The app through ``gradio_client``: scenarios (a) teacher link, (b) own seeds, (c) mixed
    methods and ranks, each next to the same runs one at a time, plus an optional soak."""
    server = AppServer()
    sampler = RssSampler(server.proc.pid)
    report: dict[str, Any] = {"level": "app", "url": server.url, "cpu_count": os.cpu_count()}
    try:
        t = time.perf_counter()
        warm = serial(server.url, [train_args(2)], sampler)  # loads the model and data once
        report["warm_up_s"] = time.perf_counter() - t
        report["rss_idle_mb"] = rss_bytes(server.proc.pid) / 2**20
        scenarios = {
            "teacher": [train_args(args.teacher_steps, seed=0)] * args.teacher,
            "own_seeds": [train_args(args.steps, seed=1 + i) for i in range(args.own)],
            "mixed": [train_args(args.steps, seed=100 + i, method=MIXED[i % len(MIXED)][0], r=MIXED[i % len(MIXED)][1])
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
                     "rss_above_one_run_mb": crowd_result["peak_rss_mb"] - one["peak_rss_mb"]}
            report["scenarios"][name] = entry
            print(f"{name}: {len(arglists)} sessions × {entry['steps']} steps — crowd {crowd_result['wall_s']:.1f} s "
                  f"(first event p95 {crowd_result['first_event_p95_s']}, done p95 {crowd_result['done_p95_s']}), "
                  f"one at a time {per_run:.1f} s/run → serial ≈ {entry['serial_estimate_s']:.1f} s; "
                  f"crowd/serial {entry['crowd_over_serial']:.2f}; RSS +{entry['rss_above_one_run_mb']:.0f} MB",
                  flush=True)
        if args.soak:
            report["soak"] = soak(server.url, args.soak, args.soak_steps, args.soak_wave, sampler)
            print(f"soak: {report['soak']}", flush=True)
        report["warm"] = warm
    finally:
        sampler.close()
        server.close()
    return report


def engine_level(args: argparse.Namespace) -> dict[str, Any]:
    """The multi-run engine directly (written with the engine; see its module)."""
    raise NotImplementedError("the engine level comes with symlora.engine")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--level", choices=["app", "engine"], default="app")
    parser.add_argument("--teacher", type=int, default=30, help="(a) sessions on one teacher link")
    parser.add_argument("--teacher-steps", type=int, default=100)
    parser.add_argument("--own", type=int, default=10, help="(b) sessions with their own seeds")
    parser.add_argument("--mixed", type=int, default=10, help="(c) sessions with mixed methods and ranks")
    parser.add_argument("--steps", type=int, default=5, help="steps of the (b) and (c) runs")
    parser.add_argument("--serial", type=int, default=3,
                        help="runs measured one at a time per scenario (0: all of them); the serial time is "
                             "their mean × the sessions")
    parser.add_argument("--soak", type=int, default=0, help="short runs of the memory soak (0: none)")
    parser.add_argument("--soak-steps", type=int, default=2)
    parser.add_argument("--soak-wave", type=int, default=10)
    parser.add_argument("--out", default=None, help="write the JSON report here")
    args = parser.parse_args(argv)
    report = app_level(args) if args.level == "app" else engine_level(args)
    report["command"] = "python bench/classroom.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report["loadavg_at_end"] = os.getloadavg()
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    return report


if __name__ == "__main__":
    main()
