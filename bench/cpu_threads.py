"""Why a server's other threads compute on one thread: a digits run trained in a second thread.

    PYTHONPATH=$PWD python bench/cpu_threads.py --repeat 3 --out bench/results/cpu_threads.json

Each case is a fresh process (OpenMP workers, once started, stay until their thread ends)
that loads the digits preset's model and data in its main thread and trains one 100-step
run (the core loop, bf16 autocast where the CPU has it) on ``--threads`` threads:

* ``one thread``: the run in the main thread too — nothing else ever computed;
* ``second thread``: the run in another thread (``symlora.lab.threads.compute_on``), the
  main thread having loaded on the default thread count — what a server did;
* ``app``: the same with the process's default set to one thread before loading, as
  ``symlora-lab`` sets it (``app.__main__.configure_threads``).

The cases alternate, round by round, so a busy shared machine slows them alike; reported:
median wall and process CPU seconds, and each case's wall against ``one thread``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CASES = ("one thread", "second thread", "app")


def case(name: str, threads: int, seed: int) -> dict[str, Any]:
    """One run of case ``name`` in this process (call it in a fresh one)."""
    import threading

    import torch

    if name == "app":
        torch.set_num_threads(1)
    from symlora.lab.data import load_dataset
    from symlora.lab.presets import get_preset
    from symlora.lab.threads import compute_on
    from symlora.lab.train import RunConfig, run
    from symlora.lab.zoo import load_model

    preset = get_preset("digits")
    base, data = load_model(preset.model), load_dataset(preset.data, seed=0)
    out: dict[str, Any] = {}

    def train() -> None:
        compute_on(threads)
        cfg = RunConfig.from_preset("digits", seed=seed)
        wall, cpu = time.perf_counter(), time.process_time()
        for event in run(cfg, base=base, dataset=data):
            last = event
        out.update(wall_s=time.perf_counter() - wall, cpu_s=time.process_time() - cpu,
                   metric_after=last.result.metric_after)

    if name == "one thread":
        train()
    else:
        worker = threading.Thread(target=train)
        worker.start()
        worker.join()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # the child's side
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(case(args.case, args.threads, args.seed)))
        return
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in CASES}
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    for i in range(args.repeat):
        for name in CASES:
            child = subprocess.run([sys.executable, __file__, "--case", name, "--threads", str(args.threads),
                                    "--seed", str(i)], capture_output=True, text=True, env=env, check=True)
            samples[name].append(json.loads(child.stdout.strip().splitlines()[-1]))
            print(f"round {i + 1}: {name:<14} wall {samples[name][-1]['wall_s']:6.2f} s "
                  f"cpu {samples[name][-1]['cpu_s']:6.2f} s", flush=True)
    table = {name: {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "cpu_s")}
             | {"walls": [round(r["wall_s"], 2) for r in rs], "accuracies": [r["metric_after"] for r in rs]}
             for name, rs in samples.items()}
    print(f"\n100-step digits run, {args.threads} training threads, median of {args.repeat}:")
    for name, row in table.items():
        print(f"  {name:<14} wall {row['wall_s']:6.2f} s  cpu {row['cpu_s']:6.2f} s  "
              f"wall / one thread {row['wall_s'] / table['one thread']['wall_s']:.2f}")
    if args.out:
        args.out.write_text(json.dumps({"cases": table, "threads": args.threads, "cpu_count": os.cpu_count(),
                                        "processor": platform.processor(), "loadavg_at_end": os.getloadavg(),
                                        "command": "python bench/cpu_threads.py " + " ".join(sys.argv[1:])}, indent=1))


if __name__ == "__main__":
    main()
