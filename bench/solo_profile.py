"""Where a solo training run's time goes, and before/after a change, side by side in one process.

    PYTHONPATH=$PWD python bench/solo_profile.py --steps 100 5 --repeat 3
    PYTHONPATH=$PWD python bench/solo_profile.py --steps 5 --profile 25      # cProfile top entries

Each case is a digits run (``fmnist-vit`` on ``mnist-5k``, the pretrained model and the data
already loaded, as in the app) through two paths:

* ``core``: ``symlora.lab.train.run`` with the preset's cadence (``eval_every`` 25, or the run
  length for shorter runs);
* ``app``: ``app.runner.stream`` — the process's training engine, the page's tracker and
  the app's evaluation cadence (what a ``/train`` call runs, minus Gradio and the plots).

``--before MODULE`` adds the same cases run by another copy of the loop (e.g. the previous
commit's ``symlora/lab/train.py`` saved as ``symlora/_train_before.py``); its ``app`` case is
the app before the engine: ``app.gpu.train_stream`` (one run through that loop) with the
previous cadence (an evaluation every ``steps // 4`` steps, at least 1).  The cases
alternate before/after so a busy machine slows both alike.  Reported: wall and process CPU seconds
(median over ``--repeat``) and the after/before ratio.  CPU timings on a shared machine are
noisy: compare ratios from one run, not numbers across runs.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import io
import json
import os
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _old_eval_every(steps: int) -> int:
    """The app's cadence before the lean loop: the preset's number of evaluations, every step at worst."""
    return max(1, steps // 4)


def in_training_thread(work: Any) -> Any:
    """``work()`` in a thread of its own computing on the app's training threads, as the
    app's engine trains (the process's other threads compute on one: symlora.lab.threads)."""
    from app.lab import training_threads
    from symlora.lab.threads import run_on

    return run_on(training_threads(), work)


def one_run(path: str, steps: int, loop: Any, old_cadence: bool, seed: int = 0) -> dict[str, Any]:
    """Run one digits run through ``path`` with the loop module ``loop``; its timings and
    final numbers.  Give each repeat its own ``seed``: the app replays an identical run."""
    import app.runner as runner
    import symlora.lab.train as train
    from app.sessions import BASES
    from app.settings import app_config
    from symlora.lab.presets import get_preset
    from symlora.lab.runconfig import RunConfig

    preset = get_preset("digits")
    saved = train.run
    train.run = loop.run  # app.gpu.train_stream imports it at call time
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        first, evaluations = None, 0
        if path == "core":
            cfg = RunConfig.from_preset("digits", steps=steps, eval_every=min(preset.config.eval_every, steps), seed=seed)
            events = in_training_thread(lambda: [(e, time.perf_counter() - wall) for e in loop.run(
                cfg, base=BASES.model(preset.model), dataset=BASES.dataset(preset.data, 0))])
            first = events[0][1]
            evaluations = sum(e.kind in ("start", "eval") for e, _ in events)
            last = events[-1][0]
        elif old_cadence:  # the app before the engine: one run through app.gpu.train_stream
            from app.gpu import train_stream
            from symlora.lab.events import TrainEvent

            config = app_config("digits", steps=steps, eval_every=_old_eval_every(steps), seed=seed)
            tracker = runner.Tracker("bench", config.method)
            for item in train_stream(config.to_dict(), None, None):
                event = TrainEvent.from_payload(item["event"])
                tracker.add(event)
                first = first or time.perf_counter() - wall
                evaluations += event.kind in ("start", "eval")
                last = event
        else:
            for event, _, _ in runner.stream(app_config("digits", steps=steps, seed=seed), stop=None, label="bench"):
                first = first or time.perf_counter() - wall
                evaluations += event.kind in ("start", "eval")
                last = event
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        train.run = saved
    result = last.result
    return {"wall_s": wall, "cpu_s": cpu, "first_event_s": first, "metric_after": result.metric_after,
            "final_loss": last.loss, "evaluations": evaluations}


def profile_run(path: str, steps: int, loop: Any, old_cadence: bool, top: int) -> str:
    prof = cProfile.Profile()
    prof.enable()
    one_run(path, steps, loop, old_cadence)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 5])
    parser.add_argument("--paths", nargs="+", default=["core", "app"], choices=["core", "app"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--before", default=None, help="module of the loop to compare with, e.g. symlora._train_before")
    parser.add_argument("--profile", type=int, default=0, help="also print cProfile's top N entries of one run per case")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    from app.__main__ import configure_threads

    configure_threads()  # as the app: before any arithmetic (symlora.lab.threads)

    import symlora.lab.train as after
    from app.sessions import BASES
    from symlora.lab.presets import get_preset

    preset = get_preset("digits")
    t = time.perf_counter()
    BASES.model(preset.model), BASES.dataset(preset.data, 0)
    load_s = time.perf_counter() - t
    loops = {"after": (after, False)}
    if args.before:
        loops = {"before": (importlib.import_module(args.before), True)} | loops
    one_run("core", 2, after, False)  # warm-up: first-call costs (imports, allocator) are not a run's

    cases = []
    for path in args.paths:
        for steps in args.steps:
            samples: dict[str, list[dict[str, Any]]] = {name: [] for name in loops}
            for i in range(args.repeat):
                for name, (loop, old) in loops.items():
                    samples[name].append(one_run(path, steps, loop, old, seed=1000 + i))
            case: dict[str, Any] = {"path": path, "steps": steps}
            for name, runs in samples.items():
                case[name] = {k: statistics.median(r[k] for r in runs) for k in ("wall_s", "cpu_s", "first_event_s")}
                case[name] |= {"evaluations": runs[0]["evaluations"], "metric_after": runs[0]["metric_after"],
                               "final_loss": runs[0]["final_loss"], "walls": [round(r["wall_s"], 3) for r in runs]}
            if args.before:
                case["wall_ratio"] = case["after"]["wall_s"] / case["before"]["wall_s"]
                case["cpu_ratio"] = case["after"]["cpu_s"] / case["before"]["cpu_s"]
            cases.append(case)
            line = f"{path:4s} {steps:4d} steps"
            for name in loops:
                c = case[name]
                line += (f" | {name}: wall {c['wall_s']:6.2f} s cpu {c['cpu_s']:6.2f} s first event {c['first_event_s']:.2f} s"
                         f" evals {c['evaluations']} acc {c['metric_after']:.3f}")
            if args.before:
                line += f" | after/before wall {case['wall_ratio']:.2f} cpu {case['cpu_ratio']:.2f}"
            print(line, flush=True)
            if args.profile:
                for name, (loop, old) in loops.items():
                    print(f"--- cProfile: {path} {steps} steps, {name}")
                    print(profile_run(path, steps, loop, old, args.profile))

    from app.lab import training_threads

    report = {"threads": training_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "load_bases_s": load_s, "loadavg_at_end": os.getloadavg(), "cases": cases,
              "command": "python bench/solo_profile.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
