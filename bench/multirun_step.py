"""One training step for K runs, three ways, side by side (the choice behind symlora.lab.multirun).

* ``solo``:    K separate steps, each the ordinary single-run step (fused adapters + AdamW);
* ``concat``:  one :class:`symlora.lab.multirun.Group` step: the K batches concatenated, the
               frozen base once on K·B samples, adapters and heads as batched products;
* ``vmap``:    ``torch.func.stack_module_state``-style stacked trainables and
               ``vmap(functional_call)`` over the runs, the frozen base unbatched (timm's
               fused attention off, the plain adapter formula: neither works under vmap).

    python bench/multirun_step.py --device cpu --runs 1 4 8 --threads 1 --clock cpu
    python bench/multirun_step.py --device cuda --runs 1 8 30 --out bench/results/multirun_step_h200.json

Prints ms per step and per run-step; the same data and digits preset (fmnist-vit,
SymLoRA r=8 on qkv+proj, batch 64) for each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from symlora import fast
from symlora.lab.multirun import Group, initial_trainables, prepare_member
from symlora.optim import param_groups
from symlora.lab.train import RunConfig
from symlora.lab.zoo import load_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device, repeat: int, clock=time.perf_counter) -> float:
    fn()
    fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        t = clock()
        fn()
        _sync(device)
        times.append(clock() - t)
    return 1000 * statistics.median(times)


def batch(k: int, b: int, device: torch.device, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.randn(k * b, 1, 32, 32, generator=g).to(device), torch.randint(0, 10, (k * b,), generator=g).to(device))


def solo_step(base, cfgs, device, g):
    models = []
    for cfg in cfgs:
        bundle, _, _ = initial_trainables(cfg, base, [str(i) for i in range(10)])
        bundle.model = _materialise(bundle.model).to(device).train()
        opt = torch.optim.AdamW(param_groups(bundle.model, cfg.lr))
        models.append((bundle.model, opt))
    x, y = batch(1, cfgs[0].batch_size, device, g)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)

    def step():
        for model, opt in models:
            with autocast:
                loss = F.cross_entropy(model(x).float(), y)
            float(loss)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return step


def _materialise(model):
    """Own copies of the shared frozen tensors (a real run has its own model)."""
    import copy

    return copy.deepcopy(model)


def concat_step(base, cfgs, device, g):
    members = [prepare_member(c, base, _fake_data(), device, lambda e: None) for c in cfgs]
    group = Group.for_run(base, members[0], device)
    for m in members:
        group.join(m)
    x, y = batch(len(cfgs), cfgs[0].batch_size, device, g)
    rows = list(range(len(cfgs)))

    def step():
        with group.autocast:
            losses = F.cross_entropy(group.stacked(x).float(), y, reduction="none").view(len(rows), -1).mean(1)
        losses.detach().tolist()
        losses.sum().backward()
        lrs, wds = group._factors(group.members)
        group.optimizer.step(group.store.params, rows, lrs, wds)
        for p in group.store.params.values():
            p.grad = None
    return step


def vmap_step(base, cfgs, device, g):
    import timm.layers
    from torch.func import functional_call

    timm.layers.set_fused_attn(False)
    models = []
    for cfg in cfgs:
        bundle, _, _ = initial_trainables(cfg, base, [str(i) for i in range(10)])
        models.append(bundle.model.to(device))
    frozen = {n: p for n, p in models[0].named_parameters() if not p.requires_grad}
    trained_models = [{n: p for n, p in m.named_parameters() if p.requires_grad} for m in models]
    stacked = {n: torch.stack([t[n] for t in trained_models]).detach().requires_grad_(True) for n in trained_models[0]}
    opt = torch.optim.AdamW(list(stacked.values()), lr=cfgs[0].lr)
    x, y = batch(len(cfgs), cfgs[0].batch_size, device, g)
    xs, ys = x.view(len(cfgs), -1, *x.shape[1:]), y.view(len(cfgs), -1)
    template = models[0]
    for module in template.modules():  # timm reads the switch when a model is built
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)

    def one(params, xb, yb):
        out = functional_call(template, {**frozen, **params}, (xb,))
        return F.cross_entropy(out.float(), yb)

    def step():
        with fast.fast_path_options(enabled=False), autocast:
            losses = torch.vmap(one, in_dims=(0, 0, 0))(stacked, xs, ys)
        losses.detach().tolist()
        losses.sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def _fake_data():
    from symlora.lab.data import ImageDataset, ImageSplits

    g = torch.Generator().manual_seed(0)
    classes = [str(i) for i in range(10)]

    def part(n):
        return ImageDataset(torch.randint(0, 255, (n, 28, 28, 1), generator=g, dtype=torch.uint8),
                            torch.randint(0, 10, (n,), generator=g), classes)
    return ImageSplits("fake", part(256), part(64), "random")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--ways", nargs="+", default=["solo", "concat", "vmap"])
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: this process's CPU time (a fairer measure on a busy shared CPU, with --threads 1)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out")
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    base = load_model("fmnist-vit")
    rows = []
    for k in args.runs:
        cfgs = [RunConfig.from_preset("digits", device=args.device, seed=s, batch_size=args.batch_size) for s in range(k)]
        row = {"runs": k}
        for way in args.ways:
            g = torch.Generator().manual_seed(0)
            fn = {"solo": solo_step, "concat": concat_step, "vmap": vmap_step}[way](base, cfgs, device, g)
            ms = _time(fn, device, args.repeat, clock)
            row[f"{way}_ms"] = round(ms, 2)
            row[f"{way}_ms_per_run"] = round(ms / k, 2)
        print(json.dumps(row), flush=True)
        rows.append(row)
    info = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(), "clock": args.clock, "torch": torch.__version__,
            "batch_size": args.batch_size, "rows": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(info, f, indent=2)


if __name__ == "__main__":
    main()
