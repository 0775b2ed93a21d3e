"""fp32 against bf16 autocast on the CPU, side by side in one process: the digits preset's ViT.

    PYTHONPATH=$PWD python bench/cpu_bf16.py --threads 1 2 --repeat 5
    PYTHONPATH=$PWD python bench/cpu_bf16.py --accuracy --seeds 0 1 2     # final accuracy, fp32 vs bf16
    PYTHONPATH=$PWD python bench/cpu_bf16.py --solo --solo-steps 100 5 --repeat 1         # whole digits runs, app and core

Per case (fp32 / bf16 autocast, alternating so a busy machine slows both alike) it times, in
process CPU seconds and wall seconds (median over ``--repeat``):

* ``train step``: one forward + backward + AdamW step of ``fmnist-vit`` with the preset's
  adapter (SymLoRA r 8 on ``attn.qkv`` + ``attn.proj``, head trained) at the preset's batch (64);
* ``eval 1000``: one evaluation pass over 1 000 test images (the task's own ``evaluate``).

bf16 pays only where oneDNN has bf16 kernels (AVX512-BF16 / AMX); elsewhere it is slower.
``--accuracy`` trains whole digits runs through ``symlora.lab.train`` in both dtypes and prints
the final test accuracy per seed.  ``--solo`` times whole digits runs through the app's path and
the core loop (``bench/solo_profile.py``'s cases), the dtype switched by ``SYMLORA_CPU_DTYPE``.  CPU timings on a shared machine are noisy: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def timings(threads: int, repeat: int, steps: int) -> dict[str, Any]:
    """Median wall and CPU seconds of a train step and an evaluation pass, fp32 and bf16."""
    from symlora.lab.data import load_dataset
    from symlora.lab.train import RunConfig, make_optimizer, prepare

    torch.set_num_threads(threads)
    cfg = RunConfig.from_preset("digits", device="cpu")
    data = load_dataset(cfg.data, seed=0)
    bundle, task, _ = prepare(cfg, dataset=data, device=torch.device("cpu"))
    model = bundle.model
    optimizer = make_optimizer(model, cfg)
    x, y = next(task.batches(cfg.batch_size, torch.Generator().manual_seed(0)))
    n_eval = min(1000, len(task.test_y))
    task.test_x, task.test_y = task.test_x[:n_eval], task.test_y[:n_eval]
    modes = {"fp32": torch.float32, "bf16": torch.bfloat16}

    attention = [m for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)]

    def step(dtype: torch.dtype) -> None:
        for m in attention:  # as symlora.lab.precision.prepare_model sets it for each dtype
            m.fused_attn = dtype == torch.float32
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            loss = task.loss(model, (x, y))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def evaluate(dtype: torch.dtype) -> None:
        for m in attention:
            m.fused_attn = dtype == torch.float32
        task.dtype = dtype  # the task evaluates under its own autocast
        task.evaluate(model)

    for dtype in modes.values():  # warm-up: oneDNN builds its kernels on first use
        step(dtype)
        evaluate(dtype)
    samples: dict[str, dict[str, list[float]]] = {f"{m} {k}": {"wall": [], "cpu": []}
                                                  for k in ("train step", "eval 1000") for m in modes}
    for _ in range(repeat):
        for name, dtype in modes.items():
            w, c = _clock()
            for _ in range(steps):
                step(dtype)
            w2, c2 = _clock()
            samples[f"{name} train step"]["wall"].append((w2 - w) / steps)
            samples[f"{name} train step"]["cpu"].append((c2 - c) / steps)
            w, c = _clock()
            evaluate(dtype)
            w2, c2 = _clock()
            samples[f"{name} eval 1000"]["wall"].append(w2 - w)
            samples[f"{name} eval 1000"]["cpu"].append(c2 - c)
    return {k: {m: statistics.median(v) for m, v in d.items()} for k, d in samples.items()}


def accuracy(seeds: list[int], steps: int | None) -> dict[str, Any]:
    """Final test accuracy and loss of digits runs, fp32 and bf16 autocast, per seed."""
    from symlora.lab import precision
    from symlora.lab.data import load_dataset
    from symlora.lab.train import RunConfig, train

    out: dict[str, Any] = {}
    data = load_dataset("mnist-5k", seed=0)
    for seed in seeds:
        for name in ("fp32", "bf16"):
            c = time.process_time()
            os.environ[precision.ENV_CPU_DTYPE] = "bfloat16" if name == "bf16" else "float32"
            cfg = RunConfig.from_preset("digits", device="cpu", seed=seed, **({"steps": steps} if steps else {}))
            result = train(cfg, dataset=data, keep_model=False)
            out[f"seed {seed} {name}"] = {"accuracy": result.metric_after, "final_loss": result.history[-1]["loss"],
                                          "cpu_s": time.process_time() - c}
            print(f"seed {seed} {name}: accuracy {result.metric_after:.4f}  loss {result.history[-1]['loss']:.4f}  "
                  f"cpu {out[f'seed {seed} {name}']['cpu_s']:.1f} s", flush=True)
    return out


def solo(steps: list[int], paths: list[str], repeat: int) -> dict[str, Any]:
    """Wall and CPU seconds of whole digits runs, float32 against bf16, alternating."""
    import solo_profile
    import symlora.lab.train as loop
    from symlora.lab import precision

    solo_profile.one_run("core", 2, loop, False)  # warm-up
    out: dict[str, Any] = {}
    for path in paths:
        for n in steps:
            runs: dict[str, list[dict[str, Any]]] = {"float32": [], "bfloat16": []}
            for i in range(repeat):
                for name in runs:
                    os.environ[precision.ENV_CPU_DTYPE] = name
                    runs[name].append(solo_profile.one_run(path, n, loop, False, seed=1000 + i))
            case = {name: {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "cpu_s")}
                    | {"metric_after": rs[0]["metric_after"], "evaluations": rs[0]["evaluations"]}
                    for name, rs in runs.items()}
            case["cpu_ratio"] = case["bfloat16"]["cpu_s"] / case["float32"]["cpu_s"]
            out[f"{path} {n} steps"] = case
            print(f"{path:4s} {n:4d} steps | " + " | ".join(
                f"{name}: wall {c['wall_s']:6.2f} s cpu {c['cpu_s']:6.2f} s acc {c['metric_after']:.3f}"
                for name, c in case.items() if name != "cpu_ratio") + f" | bf16/fp32 cpu {case['cpu_ratio']:.2f}",
                flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="train steps per timed sample")
    parser.add_argument("--accuracy", action="store_true", help="whole runs: final accuracy fp32 vs bf16")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--run-steps", type=int, default=None, help="steps of each --accuracy run (preset's: 100)")
    parser.add_argument("--solo", action="store_true", help="whole digits runs (app and core paths), fp32 vs bf16")
    parser.add_argument("--paths", nargs="+", default=["app", "core"], choices=["app", "core"])
    parser.add_argument("--solo-steps", type=int, nargs="+", default=[100, 5])
    parser.add_argument("--out", type=Path, default=None, help="write the numbers as JSON")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, oneDNN {torch.backends.mkldnn.is_available()}, "
          f"capability {torch.backends.cpu.get_cpu_capability()}")
    results: dict[str, Any] = {"torch": torch.__version__}
    if args.solo:  # the app's threads: the training thread on --threads, the rest on one
        os.environ["SYMLORA_THREADS"] = str(args.threads[0])
        from app.__main__ import configure_threads

        configure_threads()
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        results["solo"] = solo(args.solo_steps, args.paths, args.repeat)
    elif args.accuracy:
        torch.set_num_threads(args.threads[0])
        results["accuracy"] = accuracy(args.seeds, args.run_steps)
    else:
        for threads in args.threads:
            table = timings(threads, args.repeat, args.steps)
            results[f"threads {threads}"] = table
            print(f"\n{threads} thread(s)        wall s   cpu s")
            for name, t in table.items():
                print(f"  {name:<18} {t['wall']:7.4f} {t['cpu']:7.4f}")
            for k in ("train step", "eval 1000"):
                f, b = table[f"fp32 {k}"], table[f"bf16 {k}"]
                print(f"  {k}: bf16/fp32 wall {b['wall'] / f['wall']:.2f}, cpu {b['cpu'] / f['cpu']:.2f}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
