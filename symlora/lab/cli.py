"""The ``symlora`` command line: presets, train, compare, predict, export-peft.

Every sub-command is a thin layer over the library; bad arguments exit with code 2 and
an argparse-style message, never a traceback.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import distributed
from .presets import PRESETS, get_preset

log = logging.getLogger("symlora")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _preset_name(text: str) -> str:
    if text not in PRESETS:
        raise argparse.ArgumentTypeError(f"unknown preset {text!r}; choose from {', '.join(PRESETS)}")
    return text


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", type=_preset_name, default="digits", help="classroom scenario (see 'symlora presets')")
    p.add_argument("--r", type=_positive_int, help="adapter rank (preset default)")
    p.add_argument("--lora-alpha", type=_positive_float, help="scaling numerator: ΔW is multiplied by lora_alpha/r")
    p.add_argument("--target-modules", help="comma-separated module-name suffixes, a regex, or 'all-linear'")
    p.add_argument("--lora-dropout", type=float, help="dropout on the adapter's input, in [0, 1) (default 0)")
    p.add_argument("--steps", type=_positive_int, help="optimizer steps")
    p.add_argument("--lr", type=_positive_float, help="peak learning rate")
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--seed", type=int, help="seeds the head/adapter init and the data order")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=_positive_int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    own = p.add_mutually_exclusive_group()
    own.add_argument("--data", metavar="ZIP", help="your own images instead of the preset's data: a .zip with one "
                                                   "folder of images per class (image presets)")
    own.add_argument("--text", metavar="TXT", help="your own text instead of the preset's data: a .txt file, one "
                                                   "piece per line or pieces between blank / '%%' lines (text presets)")


def _own_data(args: argparse.Namespace, seed: int | None = None) -> Any:
    """The user's ``--data`` zip / ``--text`` file as splits (the app's limits and
    messages; ValueError for bad data), or None for the preset's data."""
    if not (args.data or args.text):
        return None
    from .uploads import load_images, load_text_file

    preset = get_preset(args.preset)
    seed = (args.seed if args.seed is not None else preset.config.seed) if seed is None else seed
    if args.data:
        if preset.task != "vision":
            raise ValueError(f"--data takes images, but preset {preset.name!r} trains a language model: "
                             f"use --text, or an image preset such as 'digits'")
        return load_images(args.data, seed=seed)
    if preset.task != "text":
        raise ValueError(f"--text takes text, but preset {preset.name!r} trains an image classifier: "
                         f"use --data, or a text preset such as 'fortunes'")
    return load_text_file(args.text, seed=seed)


def _run_config(args: argparse.Namespace, method: str | None = None, seed: int | None = None, r: int | None = None):
    """The run the flags ask for: the preset's, with every flag given on top (validated here,
    before anything loads: a bad value exits with code 2 and one line)."""
    from .runconfig import RunConfig

    targets = args.target_modules
    if targets and targets != "all-linear" and "," in targets:
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    elif targets and targets != "all-linear" and targets.isidentifier():
        targets = [targets]
    flags = dict(method=method or getattr(args, "method", None), r=r or args.r, lora_alpha=args.lora_alpha,
                 target_modules=targets or None, lora_dropout=args.lora_dropout, steps=args.steps, lr=args.lr,
                 batch_size=args.batch_size, seed=args.seed if seed is None else seed)
    return RunConfig.from_preset(args.preset, device=args.device,
                                 **{name: value for name, value in flags.items() if value is not None})


def cmd_presets(args: argparse.Namespace) -> int:
    rows = [{"name": p.name, "task": p.task, "model": p.model, "data": p.data, "needs_internet": p.needs_internet,
             "method": p.config.method, "steps": p.config.steps, "description": p.description} for p in PRESETS.values()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        online = "  [needs internet]" if r["needs_internet"] else ""
        print(f"{r['name']:<{width}}  {r['task']:<6}  {r['model']} → {r['data']}{online}\n{'':<{width}}  {r['description']}")
    return 0


def _train_once(args: argparse.Namespace, config, show_progress: bool, dataset: Any = None) -> Any:
    from .train import run

    final = None
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=config.steps, desc=config.method, unit="step", file=sys.stderr)
    rank, _ = distributed.rank_and_world()
    for event in run(config, dataset=dataset, keep_model=False):
        if args.json and rank == 0 and not event.is_final:
            print(json.dumps({k: v for k, v in event.to_dict().items() if k != "spectrum"}), flush=True)
        if bar is not None:
            bar.update(event.step - bar.n)
            post = {"loss": f"{event.smoothed_loss:.3f}"} if event.smoothed_loss is not None else {}
            if event.metric is not None:
                post[event.metric_name] = f"{event.metric:.4g}"
            bar.set_postfix(post)
        final = event
    if bar is not None:
        bar.close()
    return final


def cmd_train(args: argparse.Namespace) -> int:
    rank, _ = distributed.init_from_env(args.device)
    config = _run_config(args)
    dataset = _own_data(args)
    if dataset is not None and rank == 0 and not args.json:
        from .uploads import describe

        print(f"data: {args.data or args.text} — {describe(dataset)}", file=sys.stderr)
    final = _train_once(args, config, show_progress=not args.json and rank == 0 and sys.stderr.isatty(),
                        dataset=dataset)
    result = final.result
    if rank == 0:
        data_name = Path(args.data or args.text).name if dataset is not None else None
        if args.out:
            from .runs import RUN_FILE, save_run

            out = save_run(result, args.out)
            if data_name:  # what the run trained on, for 'predict' and 'export-peft'
                run_file = out / RUN_FILE
                run_file.write_text(json.dumps(json.loads(run_file.read_text()) | {"data_name": data_name}, indent=2) + "\n")
        summary = result.summary() | ({"data_name": data_name} if data_name else {})
        if args.json:
            print(json.dumps(summary), flush=True)
        else:
            print(_describe(summary))
    distributed.shutdown()
    return 0 if result.status != "error" else 1


def _describe(s: dict[str, Any]) -> str:
    on = f" on {s['data_name']}" if s.get("data_name") else ""
    lines = [
        f"{s['method']}{on}: {s['metric_name']} {s['metric_before']:.4g} → {s['metric_after']:.4g} "
        f"in {s['steps_done']} steps, {s['wall_s']:.1f} s ({s['status']})",
        f"trainable params: {s['trainable_params']:,} || all params: {s['total_params']:,}",
        f"peak training memory: {s['peak_mem_bytes'] / 2**20:.1f} MiB",
    ]
    if s.get("message"):
        lines.append(s["message"])
    return "\n".join(lines)


def cmd_compare(args: argparse.Namespace) -> int:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    from .train import TRAIN_METHODS

    bad = [m for m in methods if m not in TRAIN_METHODS]
    if bad:
        args.parser.error(f"unknown method(s) {bad}; choose from {', '.join(TRAIN_METHODS)}")
    base_r = args.r or get_preset(args.preset).config.adapter.r
    rows = []
    for method in methods:
        r = 2 * base_r if (args.equal_budget and method == "symlora") else base_r
        runs = []
        for seed in range(args.seeds):
            final = _train_once(args, _run_config(args, method=method, seed=seed, r=r), show_progress=False,
                                dataset=_own_data(args, seed))
            runs.append(final.result.summary())
            log.info("%s seed %d: %s", method, seed, final.result.metric_after)
        metric = [x["metric_after"] for x in runs]
        rows.append({
            "method": method, "r": r if method in ("lora", "symlora") else None, "seeds": args.seeds,
            "metric_name": runs[0]["metric_name"],
            "metric_before": statistics.fmean(x["metric_before"] for x in runs),
            "metric_mean": statistics.fmean(metric), "metric_std": statistics.stdev(metric) if len(metric) > 1 else 0.0,
            "trainable_params": runs[0]["trainable_params"], "total_params": runs[0]["total_params"],
            "step_ms": statistics.fmean(x["step_ms"] for x in runs if x["step_ms"]),
            "peak_mem_bytes": max(x["peak_mem_bytes"] for x in runs),
            "wall_s": sum(x["wall_s"] for x in runs),
        })
    if args.json:
        print(json.dumps(rows, indent=2))
    elif args.csv:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        print(buf.getvalue(), end="")
    else:
        print(format_table(rows))
    return 0


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of compare rows."""
    name = rows[0]["metric_name"]
    out = [f"| method | r | {name} (mean ± std) | trainable params | step ms | peak MiB |", "|---|---|---|---|---|---|"]
    for row in rows:
        out.append(
            f"| {row['method']} | {row['r'] or '—'} | {row['metric_mean']:.4f} ± {row['metric_std']:.4f} "
            f"| {row['trainable_params']:,} | {row['step_ms']:.1f} | {row['peak_mem_bytes'] / 2**20:.1f} |"
        )
    return "\n".join(out)


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import classify, generate
    from .runs import load_run
    from .zoo import VisionModel

    bundle = load_run(args.run)
    if args.image:
        if not isinstance(bundle, VisionModel):
            args.parser.error("this run tuned a language model: use --prompt")
        result: Any = [{"label": label, "prob": p} for label, p in classify(bundle, args.image, k=args.top_k)]
    else:
        if isinstance(bundle, VisionModel):
            args.parser.error("this run tuned an image classifier: use --image")
        result = {"prompt": args.prompt, "text": generate(bundle, args.prompt, max_new_tokens=args.max_new_tokens,
                                                          temperature=args.temperature, seed=args.seed)}
    if args.json:
        print(json.dumps(result))
    elif isinstance(result, list):
        for row in result:
            print(f"{row['prob']:7.2%}  {row['label']}")
    else:
        print(args.prompt + result["text"])
    return 0


def cmd_export_peft(args: argparse.Namespace) -> int:
    from ..io import export_bundle
    from .runs import load_run, read_run

    run = read_run(args.run)
    if run.get("adapter_config") is None:
        args.parser.error("this run trained no adapter (head-only or full): nothing to export")
    bundle = load_run(args.run)
    config = run.get("config") or {}
    facts = {"data": run.get("data_name") or config.get("data"), "metric_name": run.get("metric_name"),
             "metric_before": run.get("metric_before"), "metric_after": run.get("metric_after"),
             "steps": run.get("steps_done"), "seed": config.get("seed")}
    out = export_bundle(bundle, args.out, fmt="peft", facts=facts)
    print(f"wrote a PEFT LoRA adapter with its model card (README.md) to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="symlora", description="LoRA and SymLoRA fine-tuning from the command line.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("presets", help="list the classroom presets")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("train", help="fine-tune with one method")
    _add_run_options(p)
    p.add_argument("--method", choices=["symlora", "lora", "head-only", "full"], help="what to train (preset default)")
    p.add_argument("--out", help="write run.json, metrics.jsonl and the weights here")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("compare", help="several methods × seeds on the same data")
    _add_run_options(p)
    p.add_argument("--methods", default="lora,symlora,head-only")
    p.add_argument("--seeds", type=_positive_int, default=3)
    p.add_argument("--equal-budget", action="store_true", help="SymLoRA at 2r vs LoRA at r (same parameter count)")
    p.add_argument("--csv", action="store_true", help="CSV instead of a table")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("predict", help="use a saved run's tuned model")
    p.add_argument("--run", required=True, help="a folder written by 'symlora train --out'")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--image", help="an image file")
    group.add_argument("--prompt", help="a text prompt")
    p.add_argument("--top-k", type=_positive_int, default=5)
    p.add_argument("--max-new-tokens", type=_positive_int, default=40)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export-peft", help="write a saved run's adapter as a plain PEFT LoRA adapter")
    p.add_argument("--run", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_export_peft)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.parser = parser
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s", stream=sys.stderr)
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        parser.exit(2, f"symlora: error: {err}\n")
    except KeyboardInterrupt:
        parser.exit(130, "symlora: interrupted\n")


if __name__ == "__main__":
    sys.exit(main())
