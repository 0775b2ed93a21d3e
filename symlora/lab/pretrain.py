"""Pretrain the project's own small ViT on Fashion-MNIST, reproducibly.

No pretrained ViT installs offline from any package registry, so the project makes one:
a timm ``VisionTransformer`` (patch 8 at 32×32: 16 tokens, CPU-friendly) trained on all
60 000 Fashion-MNIST training images.  The result ships in ``assets/fmnist-vit/``::

    python -m symlora.lab.pretrain --out assets/fmnist-vit --device cuda

writes ``model.safetensors``, ``config.json`` (architecture, classes, normalisation,
recipe, test accuracy) and a ``README.md`` model card.  It also runs, slowly, on a CPU.
Only torch, timm, numpy and safetensors are needed (no gradio, no transformers).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from symlora.lab.data import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, load_fashion_mnist

log = logging.getLogger(__name__)

# The architecture, as keyword arguments of timm's VisionTransformer.
FMNIST_VIT_ARCH: dict[str, Any] = dict(
    img_size=32, patch_size=8, in_chans=1, num_classes=10, embed_dim=192, depth=6,
    num_heads=3, mlp_ratio=4.0, global_pool="avg", class_token=False,
)
IMAGE_SIZE = 32    # model input side
CONTENT_SIZE = 28  # images are 28×28, padded with background to IMAGE_SIZE
MEAN, STD = (0.5,), (0.5,)  # [0, 1] → [-1, 1]


@dataclass
class Recipe:
    """Everything that decides the checkpoint (saved into config.json and the card)."""

    epochs: int = 80
    batch_size: int = 512
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.15
    label_smoothing: float = 0.1
    shift: int = 2
    hflip: bool = True
    drop_path: float = 0.0
    seed: int = 0
    train_subset: int = 0  # 0 = all 60 000 (smaller only for quick checks)
    test_subset: int = 0  # 0 = all 10 000 (smaller only for quick checks)


def build_vit(arch: dict[str, Any] | None = None, **overrides: Any) -> nn.Module:
    """The fmnist-vit architecture (``FMNIST_VIT_ARCH`` plus overrides), random weights."""
    from timm.models.vision_transformer import VisionTransformer

    kwargs = dict(FMNIST_VIT_ARCH if arch is None else arch)
    kwargs.update(overrides)
    return VisionTransformer(**kwargs)


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28[, 1]) → float (N, 1, 32, 32) in [-1, 1], padded with background."""
    if images.ndim == 4:
        images = images[..., 0]
    pad = (IMAGE_SIZE - CONTENT_SIZE) // 2
    x = F.pad(images, (pad, pad, pad, pad)).unsqueeze(1).float()
    return (x / 255.0 - MEAN[0]) / STD[0]


def augment(images: torch.Tensor, *, shift: int, hflip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random ±``shift``-pixel translations (zero fill) and horizontal flips of uint8
    (N, 28, 28) images, done as one gather on whatever device the images are on."""
    n, h, w = images.shape
    dev = images.device
    if hflip:
        flip = torch.rand(n, generator=generator, device=dev) < 0.5
        images = torch.where(flip[:, None, None], images.flip(-1), images)
    if shift > 0:
        padded = F.pad(images, (shift, shift, shift, shift))
        dy = torch.randint(0, 2 * shift + 1, (n,), generator=generator, device=dev)
        dx = torch.randint(0, 2 * shift + 1, (n,), generator=generator, device=dev)
        rows = (dy[:, None] + torch.arange(h, device=dev))[:, :, None]
        cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, :]
        images = padded[torch.arange(n, device=dev)[:, None, None], rows, cols]
    return images


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 1000) -> float:
    """Top-1 accuracy in float32 (so CPU and GPU agree)."""
    model.eval()
    correct = 0
    for i in range(0, len(labels), batch_size):
        logits = model(to_model_input(images[i:i + batch_size]))
        correct += (logits.argmax(-1) == labels[i:i + batch_size]).sum().item()
    return correct / len(labels)


def train(recipe: Recipe, *, data_dir: str | Path = FASHION_MNIST_DIR, device: str = "cpu",
          eval_every: int = 5) -> tuple[nn.Module, dict[str, Any]]:
    """Train the ViT with ``recipe``; returns the model (on CPU) and a results dict."""
    torch.manual_seed(recipe.seed)
    np.random.seed(recipe.seed)
    splits = load_fashion_mnist(data_dir=data_dir)
    train_x, train_y = splits.train.images[..., 0], splits.train.labels
    if recipe.train_subset:
        keep = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(recipe.seed))[: recipe.train_subset]
        train_x, train_y = train_x[keep], train_y[keep]
    final_x, final_y = splits.test.images[..., 0], splits.test.labels
    if recipe.test_subset:
        final_x, final_y = final_x[: recipe.test_subset], final_y[: recipe.test_subset]
    test_x, test_y = final_x.to(device), final_y.to(device)
    train_x, train_y = train_x.to(device), train_y.to(device)

    model = build_vit(drop_path_rate=recipe.drop_path).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "pos_embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "pos_embed" in n]
    opt_kw = {"fused": True} if device.startswith("cuda") else {}
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr, **opt_kw)
    steps_per_epoch = math.ceil(len(train_y) / recipe.batch_size)
    total = steps_per_epoch * recipe.epochs
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.lr, total_steps=total, pct_start=recipe.warmup_fraction,
        anneal_strategy="cos", div_factor=25.0, final_div_factor=1e3, cycle_momentum=False)
    gen = torch.Generator(device=device).manual_seed(recipe.seed)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else torch.autocast("cpu", enabled=False)

    history = []
    start = time.perf_counter()
    for epoch in range(1, recipe.epochs + 1):
        model.train()
        order = torch.randperm(len(train_y), generator=gen, device=device)
        running = torch.zeros((), device=device)
        for i in range(steps_per_epoch):
            idx = order[i * recipe.batch_size:(i + 1) * recipe.batch_size]
            x = to_model_input(augment(train_x[idx], shift=recipe.shift, hflip=recipe.hflip, generator=gen))
            with amp:
                loss = F.cross_entropy(model(x), train_y[idx], label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += loss.detach()
        last = epoch == recipe.epochs
        if epoch % eval_every == 0 or last:
            seconds = round(time.perf_counter() - start, 1)
            if last:  # the final number is measured once, on the CPU, in float32 (what tests check)
                model = model.cpu().eval()
                acc = evaluate(model, final_x, final_y)
            else:
                acc = evaluate(model, test_x, test_y)
            entry = {"epoch": epoch, "train_loss": round(running.item() / steps_per_epoch, 4),
                     "test_accuracy": round(acc, 4), "seconds": seconds}
            history.append(entry)
            log.info("epoch %d/%d loss %.4f test acc %.4f (%.0f s)", epoch, recipe.epochs,
                     entry["train_loss"], acc, entry["seconds"])
    wall = time.perf_counter() - start
    return model, {"test_accuracy": acc, "test_images": len(final_y), "wall_seconds": round(wall, 1), "params": n_params, "history": history}


def reproduce_command(recipe: Recipe, *, device: str, out: str = "assets/fmnist-vit") -> str:
    """The command line that rebuilds this checkpoint (recipe fields that differ from the
    defaults; the data folder is left at its default since the data are the same)."""
    args = ["python", "-m", "symlora.lab.pretrain", "--out", out, "--device", device.split(":")[0]]
    for name, value in asdict(recipe).items():
        if value != getattr(Recipe(), name):
            args += ["--" + name.replace("_", "-"), str(value)]
    return " ".join(shlex.quote(a) for a in args)


def hardware(device: str) -> str:
    """A one-line description of where training ran."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"1× {torch.cuda.get_device_name(torch.device(device))}, torch {torch.__version__}"
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), torch {torch.__version__}"


def model_card(config: dict[str, Any]) -> str:
    """The README.md that ships beside the weights."""
    r, res = config["recipe"], config["results"]
    hist = "\n".join(f"| {h['epoch']} | {h['train_loss']} | {100 * h['test_accuracy']:.2f} % | {h['seconds']} |"
                     for h in res["history"])
    return f"""# fmnist-vit — a small ViT pretrained on Fashion-MNIST

The SymLoRA Lab's own pretrained vision transformer.  No pretrained ViT installs from any
package registry, so this one is made by a script in the repository that anyone can rerun.
Classroom story: *a ViT that has only ever seen clothes learns digits by training ~1 % of its weights.*

| | |
|---|---|
| architecture | timm `VisionTransformer` {json.dumps(config['arch'])} |
| parameters | {res['params']:,} |
| input | 1×32×32: a 28×28 grey image padded by 2 px of background, scaled to [-1, 1] (mean = std = 0.5) |
| classes | {', '.join(config['classes'])} |
| **test accuracy** | **{100 * res['test_accuracy']:.2f} %** on {res.get('test_images', 10_000):,} Fashion-MNIST test images (float32) |
| training wall time | {res['wall_seconds']} s on {config['hardware']} |
| seed | {r['seed']} |
| licence | weights: MIT (same as the data); data: Fashion-MNIST © 2017 Zalando SE, MIT |

## Data
All 60 000 Fashion-MNIST training images (Xiao, Rasul & Vollgraf 2017), from the Debian
package `dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist`).  The test set was used
only to report accuracy.

## Recipe
AdamW (lr {r['lr']}, weight decay {r['weight_decay']} on matrices only), one-cycle schedule
({int(100 * r['warmup_fraction'])} % warm-up, cosine decay), batch {r['batch_size']}, {r['epochs']} epochs,
label smoothing {r['label_smoothing']}, random ±{r['shift']}-pixel shifts{' and horizontal flips' if r['hflip'] else ''},
drop-path {r['drop_path']}, bf16 autocast on CUDA (float32 on CPU).

## Reproduce
```
{config['command']}
```
GPU runs are seeded but not bit-exact (bf16 and atomics); expect the same accuracy within a
few tenths of a percent.

## Progress
| epoch | train loss | test accuracy | seconds |
|---|---|---|---|
{hist}

## Use
```python
from symlora.lab.zoo import load_model
vm = load_model("fmnist-vit")          # VisionModel: .model, .preprocess, .reset_head
```
"""


def save(model: nn.Module, out: Path, recipe: Recipe, results: dict[str, Any], *, command: str, device: str) -> dict[str, Any]:
    """Write model.safetensors, config.json and README.md into ``out``."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt", "name": "fmnist-vit"})
    config = {
        "name": "fmnist-vit",
        "architecture": "timm.models.vision_transformer.VisionTransformer",
        "arch": FMNIST_VIT_ARCH,
        "classes": list(FASHION_MNIST_CLASSES),
        "image_size": IMAGE_SIZE,
        "content_size": CONTENT_SIZE,
        "in_chans": 1,
        "mean": list(MEAN),
        "std": list(STD),
        "head_name": "head",
        "default_targets": ["attn.qkv", "attn.proj"],
        "recipe": asdict(recipe),
        "results": results,
        "hardware": hardware(device),
        "command": command,
        "licence": "MIT",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "README.md").write_text(model_card(config))
    return config


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for model.safetensors, config.json, README.md")
    p.add_argument("--data-dir", default=str(FASHION_MNIST_DIR), help="folder holding the 4 Fashion-MNIST .gz files")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (CPU runs only)")
    p.add_argument("--eval-every", type=int, default=5)
    defaults = Recipe()
    for name, value in asdict(defaults).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            p.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=value)
        else:
            p.add_argument(flag, type=type(value), default=value)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    recipe = Recipe(**{k: getattr(args, k) for k in asdict(defaults)})
    model, results = train(recipe, data_dir=args.data_dir, device=args.device, eval_every=args.eval_every)
    command = reproduce_command(recipe, device=args.device)
    save(model, args.out, recipe, results, command=command, device=args.device)
    log.info("test accuracy %.4f, %d params, %.1f s → %s", results["test_accuracy"], results["params"],
             results["wall_seconds"], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
