"""Tensors with a run dimension: K runs' adapters and heads, their AdamW, their ranks.

The building blocks of :mod:`symlora.lab.multirun`: every trained tensor of K runs is one
(K, …) tensor; :class:`StackedAdapter` and :class:`StackedLinear` apply them to a batch
that holds the K runs' samples one after the other, :class:`StackedAdamW` updates them as
K independent AdamW optimizers, and :func:`pad_rank` / :func:`cut_rank` let runs of
different ranks share tensors (zero padding, which is inert: see below).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import fast
from ..layers import AdapterLayer, SymLoraLayer, symlora_delta


# --------------------------------------------------------------------------- the optimizer
class StackedAdamW:
    """AdamW over tensors whose first dimension is the run: K exact AdamW optimizers.

    AdamW is element-wise, so one update over a (K, …) tensor is K independent updates
    as long as what differs per run is a per-run factor: the learning rate (each run's
    place in its schedule, times a per-tensor multiplier such as Λ's √n), the weight
    decay, and the step count behind the bias correction.  Same formulas as
    ``torch.optim.AdamW`` (betas 0.9/0.999, eps 1e-8, decoupled weight decay).

    ``step(rows, lrs, wds)``: ``rows`` are the runs (row indices) that took this step;
    ``lrs[name]``/``wds[name]`` per-row factors for each tensor.  The others are untouched.
    """

    def __init__(self, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.betas = betas
        self.eps = eps
        self.exp_avg: dict[str, Tensor] = {}
        self.exp_avg_sq: dict[str, Tensor] = {}
        self.steps: list[int] = []

    def add_run(self, params: dict[str, Tensor]) -> None:
        """A new last row: zero moments, step count 0."""
        for name, p in params.items():
            zeros = torch.zeros_like(p).unsqueeze(0)
            self.exp_avg[name] = torch.cat([self.exp_avg[name], zeros]) if name in self.exp_avg else zeros
            self.exp_avg_sq[name] = torch.cat([self.exp_avg_sq[name], zeros.clone()]) if name in self.exp_avg_sq else zeros.clone()
        self.steps.append(0)

    def keep_rows(self, keep: Tensor) -> None:
        """Cut every run not in ``keep`` (row indices, in order) out of the state."""
        for state in (self.exp_avg, self.exp_avg_sq):
            for name in state:
                state[name] = state[name].index_select(0, keep.to(state[name].device))
        self.steps = [self.steps[i] for i in keep.tolist()]

    @torch.no_grad()
    def step(self, params: dict[str, Tensor], rows: list[int], lrs: dict[str, list[float]],
             wds: dict[str, list[float]]) -> None:
        beta1, beta2 = self.betas
        for i in rows:
            self.steps[i] += 1
        bc1 = [1 - beta1 ** self.steps[i] for i in rows]
        bc2_sqrt = [math.sqrt(1 - beta2 ** self.steps[i]) for i in rows]
        names = [n for n, p in params.items() if p.grad is not None]
        if not names:
            return
        device = params[names[0]].device
        # every per-run factor of this step in one host→device copy: (tensors, 3, rows)
        factors = torch.tensor([[[lrs[n][j] / bc1[j] for j in range(len(rows))], bc2_sqrt,
                                 [1 - lrs[n][j] * wds[n][j] for j in range(len(rows))]] for n in names],
                               dtype=torch.float32).to(device, non_blocking=True)
        idx = None if len(rows) == len(self.steps) else torch.tensor(rows, device=device)
        for t, name in enumerate(names):
            p = params[name]
            shape = (len(rows),) + (1,) * (p.dim() - 1)
            step_size, bc2, decay = (factors[t, i].view(shape).to(p.dtype) for i in range(3))
            grad, m, v = p.grad, self.exp_avg[name], self.exp_avg_sq[name]
            if idx is not None:
                grad, m, v, data = grad.index_select(0, idx), m.index_select(0, idx), v.index_select(0, idx), p.index_select(0, idx)
            else:
                data = p.data
            data.mul_(decay)
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (v.sqrt() / bc2).add_(self.eps)
            data.sub_(step_size * m / denom)
            if idx is not None:
                p.data.index_copy_(0, idx, data)
                self.exp_avg[name].index_copy_(0, idx, m)
                self.exp_avg_sq[name].index_copy_(0, idx, v)


# --------------------------------------------------------------------------- stacked layers
class RunRows:
    """What the stacked modules read during a forward: the group's tensors and the rows
    (runs) taking part (``None`` = all of them)."""

    def __init__(self) -> None:
        self.params: dict[str, nn.Parameter] = {}
        self.scaling: Tensor | None = None  # (K,) per-run adapter scaling
        self.scaling_values: list[float] = []
        self.rows: Tensor | None = None
        self.row_list: list[int] | None = None

    def get(self, name: str) -> Tensor:
        p = self.params[name]
        return p if self.rows is None else p.index_select(0, self.rows)

    def scale(self) -> Tensor:
        s = self.scaling
        return s if self.rows is None else s.index_select(0, self.rows)

    def only_scale(self) -> float:
        """The scaling of the one run taking part (see :meth:`count`)."""
        return self.scaling_values[self.row_list[0] if self.row_list else 0]

    def count(self) -> int:
        if self.rows is not None:
            return int(self.rows.numel())
        return int(self.scaling.numel()) if self.scaling is not None else len(next(iter(self.params.values())))


class StackedAdapter(nn.Module):
    """A frozen linear layer shared by K runs, each with its own LoRA / SymLoRA adapter:
    ``y = x·Wᵀ + b`` for all K·B rows in one GEMM, plus each run's ``x_k·ΔW_kᵀ`` as one
    batched product on the (K, rows, features) view."""

    def __init__(self, layer: AdapterLayer, name: str, store: RunRows) -> None:
        super().__init__()
        self.base_layer = layer.base_layer
        self.name = name
        self.store = store
        self.in_features, self.out_features = layer.in_features, layer.out_features
        self.kind = "symlora" if isinstance(layer, SymLoraLayer) else "lora"
        if isinstance(layer, SymLoraLayer):
            self.k_in, self.k_out = layer.k_in, layer.k_out

    def forward(self, x: Tensor) -> Tensor:
        runs = self.store.count()
        if runs == 1 and fast.fused_path_enabled():  # one run: the single-layer fused node, as train.run
            return self._one(x)
        y = self.base_layer(x)
        xr = x.reshape(runs, -1, self.in_features)
        s = self.store.scale().view(runs, 1, 1)
        if self.kind == "symlora":
            q = self.store.get(self.name + ".lora_Q")
            lam = self.store.get(self.name + ".lora_lambda").unsqueeze(1) * s
            delta = symlora_delta(xr, q, lam, self.k_in, self.k_out)
        else:
            a = self.store.get(self.name + ".lora_A.weight")  # (K, r, in)
            b = self.store.get(self.name + ".lora_B.weight")  # (K, out, r)
            delta = ((xr @ a.transpose(1, 2)) @ b.transpose(1, 2)) * s
        return y + delta.reshape(y.shape).to(y.dtype)

    def _one(self, x: Tensor) -> Tensor:
        base, s = self.base_layer, self.store.only_scale()
        x2 = x.reshape(-1, self.in_features)
        if self.kind == "symlora":
            q = self.store.get(self.name + ".lora_Q")[0]
            lam = self.store.get(self.name + ".lora_lambda")[0]
            y = fast.symlora_linear(x2, base.weight, base.bias, q, lam, self.k_in, self.k_out, s)
        else:
            a = self.store.get(self.name + ".lora_A.weight")[0]
            b = self.store.get(self.name + ".lora_B.weight")[0]
            y = fast.lora_linear(x2, base.weight, base.bias, a, b, s)
        return y.view(*x.shape[:-1], self.out_features)


class StackedLinear(nn.Module):
    """K trained linear layers (a new classifier head per run) as one batched product."""

    def __init__(self, name: str, store: RunRows, bias: bool) -> None:
        super().__init__()
        self.name = name
        self.store = store
        self.has_bias = bias

    def forward(self, x: Tensor) -> Tensor:
        runs = self.store.count()
        w = self.store.get(self.name + ".weight")  # (K, out, in)
        if runs == 1:
            return F.linear(x, w[0], self.store.get(self.name + ".bias")[0] if self.has_bias else None)
        xr = x.reshape(runs, -1, x.shape[-1])
        if self.has_bias:
            y = torch.baddbmm(self.store.get(self.name + ".bias").unsqueeze(1), xr, w.transpose(1, 2))
        else:
            y = xr @ w.transpose(1, 2)
        return y.reshape(*x.shape[:-1], w.shape[1])


# --------------------------------------------------------------------------- ranks
# Runs of different ranks share a group: every adapter tensor is zero-padded to the group's
# largest rank.  Padding is inert and stays zero: a zero column of Q (or row of A) with a zero
# λ (or column of B) adds nothing to the output and gets a zero gradient, so AdamW leaves it
# at zero.  Block layouts pad each block's r columns.
def _rank_kind(name: str) -> str | None:
    if name.endswith((".lora_Q", ".lora_lambda")):
        return "blocks"
    if name.endswith(".lora_A.weight"):
        return "rows"
    if name.endswith(".lora_B.weight"):
        return "cols"
    return None


def pad_rank(t: Tensor, name: str, k: int, r: int, to: int) -> Tensor:
    """``t`` (any leading dimensions) from rank ``r`` to rank ``to`` with zeros."""
    kind = _rank_kind(name)
    if kind is None or to == r:
        return t
    if kind == "blocks":
        return F.pad(t.unflatten(-1, (k, r)), (0, to - r)).flatten(-2)
    if kind == "rows":
        return F.pad(t, (0, 0, 0, to - r))
    return F.pad(t, (0, to - r))


def cut_rank(t: Tensor, name: str, k: int, r: int, to: int) -> Tensor:
    """The rank-``to`` part of ``t`` (padded to rank ``r``)."""
    kind = _rank_kind(name)
    if kind is None or to == r:
        return t
    if kind == "blocks":
        return t.unflatten(-1, (k, r))[..., :to].flatten(-2)
    if kind == "rows":
        return t[..., :to, :]
    return t[..., :to]
