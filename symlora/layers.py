"""Adapter layers: a frozen base layer plus a trainable low-rank update.

Two parameterisations of the update ΔW share one wrapper, :class:`AdapterLayer`:

* :class:`LoraLayer`    ΔW = s · B · A                 (A ∈ R^{r×in}, B ∈ R^{out×r})
* :class:`SymLoraLayer` ΔW = s · Q · diag(Λ) · Qᵀ      (Q ∈ R^{n×r}, Λ ∈ R^r)

SymLoRA needs a square block. A rectangular layer whose sides are whole multiples
(a fused ``qkv`` with out = 3·in, an MLP ``fc2`` with in = 4·out) gets k independent
symmetric blocks, stacked (out = k·in) or side by side (in = k·out).  All k blocks are
computed together: one GEMM with the concatenated Q on one side, one batched product
on the other; no n×n matrix is ever formed while training.

The wrapped layer may be an ``nn.Linear`` or a 1×1, stride-1 ``nn.Conv2d``.

Training and unmerged inference of a Linear go through :mod:`symlora.fast` — base and
adapter in one autograd node, about the cost of the frozen layer alone.  The plain
formula (``base_layer(x) + delta(x)``) remains for 1×1 convolutions, active dropout, a
base layer that is itself trained, and inside ``symlora.fast.fast_path_options(enabled=False)``.

How a shape splits into blocks, and what each method costs on it, is
:class:`symlora.blocks.BlockLayout`'s job; a layer reads it once, in ``__init__``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from . import fast
from .blocks import BlockLayout
from .config import AdapterConfig


def layer_shape(layer: nn.Module) -> tuple[int, int] | None:
    """``(in_features, out_features)`` of a layer an adapter can wrap, else ``None``."""
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features
    if (
        isinstance(layer, nn.Conv2d)
        and layer.kernel_size == (1, 1)
        and layer.stride == (1, 1)
        and layer.groups == 1
        and layer.padding in ((0, 0), "valid")
    ):
        return layer.in_channels, layer.out_channels
    return None


def symmetric_blocks(in_features: int, out_features: int) -> tuple[str, int, int] | None:
    """``(layout, k, n)`` of :class:`~symlora.blocks.BlockLayout`, or ``None`` when SymLoRA
    cannot tile the shape (the older spelling, kept for callers such as benchmarks)."""
    blocks = BlockLayout(in_features, out_features)
    return (blocks.layout, blocks.k, blocks.n) if blocks.symmetric else None


def symlora_delta(x: Tensor, q: Tensor, lam: Tensor, k_in: int, k_out: int) -> Tensor:
    """``x·ΔWᵀ`` for SymLoRA's blocks ΔW_b = Q_b·diag(Λ_b)·Q_bᵀ (``lam`` = s·Λ, scaling included).

    ``x`` is (..., rows, in); ``q`` is (n, k·r) — block b in columns b·r … — or carries
    leading dimensions that broadcast against x's (a run dimension: q (K, n, k·r) with
    x (K, rows, in) and lam (K, 1, k·r) give K independent adapters in one batched product;
    see :mod:`symlora.lab.multirun`).  ``k_in``/``k_out``: the blocks along the input and
    the output, as :class:`~symlora.blocks.BlockLayout` gives them (at most one exceeds 1).
    """
    if k_in == 1 and k_out == 1:
        return ((x @ q) * lam) @ q.transpose(-1, -2)
    k = max(k_in, k_out)
    qb = q.unflatten(-1, (k, q.shape[-1] // k))  # (..., n, k, r)
    if k_out > 1:  # stacked: out_b = (x·Q_b ⊙ Λ_b)·Q_bᵀ, blocks along the output
        h = ((x @ q) * lam).unflatten(-1, (k, q.shape[-1] // k)).transpose(-3, -2)  # (..., k, rows, r)
        return (h @ qb.movedim(-3, -1)).transpose(-3, -2).flatten(-2)
    # side: out = Σ_b (x_b·Q_b ⊙ Λ_b)·Q_bᵀ, blocks along the input
    xb = x.unflatten(-1, (k, x.shape[-1] // k)).transpose(-3, -2)  # (..., k, rows, n)
    h = (xb @ qb.movedim(-3, -2)).transpose(-3, -2).flatten(-2)  # (..., rows, k·r)
    return (h * lam) @ q.transpose(-1, -2)


class AdapterLayer(nn.Module):
    """A frozen ``base_layer`` plus ``scaling · delta(x)``; subclasses define the delta."""

    def __init__(self, base_layer: nn.Module, config: AdapterConfig) -> None:
        super().__init__()
        shape = layer_shape(base_layer)
        if shape is None or not isinstance(base_layer, (nn.Linear, nn.Conv2d)):
            raise TypeError(f"cannot adapt {type(base_layer).__name__}: need nn.Linear or a 1x1 nn.Conv2d")
        self.base_layer: nn.Linear | nn.Conv2d = base_layer
        self.in_features, self.out_features = shape
        self.block_layout = BlockLayout(self.in_features, self.out_features)
        self.is_conv = isinstance(base_layer, nn.Conv2d)
        self.r = config.r
        self.scaling = config.scaling
        self.lora_dropout = nn.Dropout(config.lora_dropout) if config.lora_dropout > 0 else nn.Identity()
        self.merged = False
        self.disabled = False

    # -- to be defined by each parameterisation ---------------------------------
    def delta(self, x: Tensor) -> Tensor:
        """``x @ ΔWᵀ`` for ``x`` of shape (..., in_features), scaling included."""
        raise NotImplementedError

    def delta_weight(self) -> Tensor:
        """The explicit update ΔW (out_features × in_features), scaling included."""
        raise NotImplementedError

    def fused_linear(self, x: Tensor) -> Tensor:
        """Base layer plus update for a 2-D x (rows × in_features), one fused autograd node."""
        raise NotImplementedError

    def adapter_parameters(self) -> dict[str, nn.Parameter]:
        """The trainable adapter tensors by their local names."""
        return {n: p for n, p in self.named_parameters() if not n.startswith("base_layer.")}

    # -- shared machinery --------------------------------------------------------
    def uses_fused_path(self) -> bool:
        """Whether :meth:`forward` takes the fused path now (see the module docstring)."""
        base = self.base_layer
        return (
            fast.fused_path_enabled()
            and not self.is_conv
            and not (self.training and isinstance(self.lora_dropout, nn.Dropout))
            and not base.weight.requires_grad
            and (base.bias is None or not base.bias.requires_grad)
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.disabled or self.merged:
            return self.base_layer(x)
        if self.uses_fused_path():
            y = self.fused_linear(x.reshape(-1, self.in_features))
            return y.view(*x.shape[:-1], self.out_features)
        y = self.base_layer(x)
        h = self.lora_dropout(x)
        if self.is_conv:
            return y + self.delta(h.movedim(1, -1)).movedim(-1, 1).to(y.dtype)
        return y + self.delta(h).to(y.dtype)

    @torch.no_grad()
    def merge(self) -> None:
        """Add ΔW into the base weight once; the adapter path is then skipped."""
        if not self.merged:
            w = self.base_layer.weight
            w += self.delta_weight().reshape(w.shape).to(w.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract ΔW from the base weight again.

        Restores W to float rounding, not bit for bit (as PEFT does; keeping a copy of W
        would double the memory of every adapted layer): each merge/unmerge cycle moves an
        entry of W by at most ``eps·(|W| + |ΔW|)`` of the weight's dtype (two roundings of
        half an ulp each).  ``disable_adapters`` on a merged model is one such cycle."""
        if self.merged:
            w = self.base_layer.weight
            w -= self.delta_weight().reshape(w.shape).to(w.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, r={self.r}, scaling={self.scaling:g}"


class LoraLayer(AdapterLayer):
    """Classic LoRA (Hu et al. 2021): ΔW = s·B·A, B = 0 at init so ΔW starts at 0."""

    def __init__(self, base_layer: nn.Module, config: AdapterConfig) -> None:
        super().__init__(base_layer, config)
        w = self.base_layer.weight
        self.lora_A = nn.Linear(self.in_features, self.r, bias=False, device=w.device, dtype=w.dtype)
        self.lora_B = nn.Linear(self.r, self.out_features, bias=False, device=w.device, dtype=w.dtype)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def delta(self, x: Tensor) -> Tensor:
        return self.lora_B(self.lora_A(x)) * self.scaling

    def fused_linear(self, x: Tensor) -> Tensor:
        base = self.base_layer
        return fast.lora_linear(x, base.weight, base.bias, self.lora_A.weight, self.lora_B.weight, self.scaling)

    def delta_weight(self) -> Tensor:
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling


class SymLoraLayer(AdapterLayer):
    """SymLoRA: each square block of ΔW is s·Q_b·diag(Λ_b)·Q_bᵀ.

    Parameters: ``lora_Q`` of shape (n, k·r) — block b is columns b·r … (b+1)·r — and
    ``lora_lambda`` of shape (k·r,).  That is k·(n·r + r) weights where LoRA needs
    r·(in + out) = r·n·(k + 1).  Λ starts at zero (ΔW = 0); Q starts random, since
    Q = 0 is a saddle point where both gradients vanish.
    """

    def __init__(self, base_layer: nn.Module, config: AdapterConfig) -> None:
        super().__init__(base_layer, config)
        blocks = self.block_layout  # raises ValueError for a shape without square blocks
        self.layout, self.k, self.n = blocks.layout, blocks.k, blocks.n
        self.k_in, self.k_out = blocks.k_in, blocks.k_out
        w = self.base_layer.weight
        self.lora_Q = nn.Parameter(torch.empty(self.n, self.k * self.r, device=w.device, dtype=w.dtype))
        self.lora_lambda = nn.Parameter(torch.zeros(self.k * self.r, device=w.device, dtype=w.dtype))
        self.reset_q(config.symlora_init, config.init_scale)

    @torch.no_grad()
    def reset_q(self, init: str = "gaussian", scale: float = 1.0) -> None:
        """Draw Q: unit-variance columns divided by √n (``gaussian``) or orthonormal
        columns per block (``orthogonal``), both times ``scale``."""
        nn.init.normal_(self.lora_Q, std=scale / math.sqrt(self.n))
        if init == "orthogonal":  # r > n leaves the surplus columns Gaussian
            for b in range(self.k):
                g = torch.randn(self.n, self.r, device=self.lora_Q.device, dtype=torch.float32)
                q, _ = torch.linalg.qr(g)
                cols = slice(b * self.r, (b + 1) * self.r)
                self.lora_Q[:, cols][:, : q.shape[1]] = (q * scale).to(self.lora_Q.dtype)

    def q_blocks(self) -> Tensor:
        """Q as (n, k, r): a view, block b is ``[:, b, :]``."""
        return self.lora_Q.view(self.n, self.k, self.r)

    def lambda_blocks(self) -> Tensor:
        """Λ as (k, r): a view, block b is ``[b]`` (scaling not included)."""
        return self.lora_lambda.view(self.k, self.r)

    def delta(self, x: Tensor) -> Tensor:
        return symlora_delta(x, self.lora_Q, self.lora_lambda * self.scaling, self.k_in, self.k_out)

    def fused_linear(self, x: Tensor) -> Tensor:
        base = self.base_layer
        return fast.symlora_linear(
            x, base.weight, base.bias, self.lora_Q, self.lora_lambda, self.k_in, self.k_out, self.scaling
        )

    def block_deltas(self) -> Tensor:
        """The k symmetric blocks s·Q_b·diag(Λ_b)·Q_bᵀ, shape (k, n, n)."""
        q = self.q_blocks()
        return torch.einsum("nbr,br,mbr->bnm", q, self.lambda_blocks() * self.scaling, q)

    def delta_weight(self) -> Tensor:
        return self.block_layout.join(self.block_deltas())

    def extra_repr(self) -> str:
        return super().extra_repr() + f", layout={self.layout}, blocks={self.k}"


ADAPTERS: dict[str, type[AdapterLayer]] = {"lora": LoraLayer, "symlora": SymLoraLayer}

