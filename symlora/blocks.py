"""How an adapter covers one layer: SymLoRA's square blocks, LoRA's two factors, their cost.

A layer maps ``in_features`` to ``out_features`` (weight: out × in).  LoRA covers any
shape with ΔW = B·A.  SymLoRA's blocks Q·diag(Λ)·Qᵀ are symmetric, so they are square:
the weight is tiled into ``k_out × k_in`` blocks of n × n, which works when one side is a
whole multiple of the other:

==========  ==============  =====  =====  ======================================
layout      shape           k_out  k_in   example
==========  ==============  =====  =====  ======================================
square      in = out = n    1      1      attention ``proj``, ``q_proj``
stacked     out = k·in      k      1      fused ``qkv`` (blocks on top of each other)
side        in = k·out      1      k      MLP ``fc2``, GQA ``k_proj`` (side by side)
==========  ==============  =====  =====  ======================================

Weights per layer at rank r (both linear in r, so an equal budget is one division):

* LoRA:    r·(in + out)   — A (r × in) and B (out × r)
* SymLoRA: k·(n·r + r)    — Q (n × k·r, block b in columns b·r …) and Λ (k·r)

:class:`BlockLayout` is the one place this arithmetic lives; layers, the fused path,
export, spectra, the app's counters and the benchmarks ask it.  Layers read it once when
they are built, never per forward.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .config import METHODS

Layout = Literal["square", "stacked", "side"]


@dataclass(frozen=True)
class BlockLayout:
    """One layer's shape, and how each method's adapter covers it.

    The SymLoRA properties (:attr:`layout`, :attr:`k`, :attr:`n`, ...) raise
    ``ValueError`` for a layer SymLoRA cannot tile (:attr:`symmetric` is ``False``);
    LoRA's count works for every shape.
    """

    in_features: int
    out_features: int

    def __post_init__(self) -> None:
        if self.in_features < 1 or self.out_features < 1:
            raise ValueError(f"a layer needs positive sides, got in={self.in_features}, out={self.out_features}")

    # -- SymLoRA's tiling ------------------------------------------------------------------
    @property
    def symmetric(self) -> bool:
        """Whether SymLoRA can tile the layer: one side a whole multiple of the other."""
        return max(self.in_features, self.out_features) % min(self.in_features, self.out_features) == 0

    def _require_symmetric(self) -> None:
        if not self.symmetric:
            raise ValueError(
                f"SymLoRA needs a square layer or one whose sides are whole multiples; "
                f"got in={self.in_features}, out={self.out_features}"
            )

    @property
    def n(self) -> int:
        """The side of one square block: the shorter side of the layer."""
        self._require_symmetric()
        return min(self.in_features, self.out_features)

    @property
    def k(self) -> int:
        """The number of blocks (1 for a square layer)."""
        self._require_symmetric()
        return max(self.in_features, self.out_features) // min(self.in_features, self.out_features)

    @property
    def k_out(self) -> int:
        """Blocks along the output (rows of W): k when stacked, else 1."""
        k = self.k
        return k if self.out_features > self.in_features else 1

    @property
    def k_in(self) -> int:
        """Blocks along the input (columns of W): k when side by side, else 1."""
        k = self.k
        return k if self.in_features > self.out_features else 1

    @property
    def layout(self) -> Layout:
        """``"square"``, ``"stacked"`` (out = k·in) or ``"side"`` (in = k·out)."""
        self._require_symmetric()
        if self.in_features == self.out_features:
            return "square"
        return "stacked" if self.out_features > self.in_features else "side"

    # -- parameter counts ------------------------------------------------------------------
    def params_per_rank(self, method: str) -> int:
        """Adapter weights per unit of rank: ``in + out`` (LoRA), ``k·(n + 1)`` (SymLoRA)."""
        if method == "lora":
            return self.in_features + self.out_features
        if method == "symlora":
            return self.k * (self.n + 1)
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")

    def params(self, method: str, r: int) -> int:
        """Adapter weights of ``method`` at rank ``r`` on this layer."""
        return r * self.params_per_rank(method)

    def equal_budget_rank(self, r: int, source: str = "lora", target: str = "symlora") -> int:
        """The ``target`` rank whose weight count is closest to ``source``'s at rank ``r``."""
        return equal_budget_rank([self], r, source, target)

    # -- the blocks of a full matrix ------------------------------------------------------
    def split(self, weight: Tensor) -> Tensor:
        """A (out × in) matrix as its k square blocks, shape (k, n, n); block b is the
        b-th n rows (stacked) or the b-th n columns (side)."""
        k, n = self.k, self.n
        if self.k_in > 1:
            return weight.reshape(n, k, n).transpose(0, 1)
        return weight.reshape(k, n, n)

    def join(self, blocks: Tensor) -> Tensor:
        """The (out × in) matrix made of k square blocks (k, n, n): :meth:`split`'s inverse."""
        k, n = self.k, self.n
        if self.k_in > 1:
            return blocks.transpose(0, 1).reshape(n, k * n)
        return blocks.reshape(k * n, n)


def block_diagonal(t: Tensor, k: int) -> Tensor:
    """The k column blocks of t (rows × k·c) laid out on a diagonal: (k·rows × k·c).

    How a SymLoRA factor whose side carries k blocks looks as a plain matrix (e.g. LoRA's
    B = blockdiag(Q_b·diag Λ_b) of a stacked layer); t itself when k = 1."""
    return t if k == 1 else torch.block_diag(*t.chunk(k, dim=1))


def total_params(layouts: Iterable[BlockLayout], method: str, r: int) -> int:
    """Adapter weights of ``method`` at rank ``r`` on all of ``layouts``."""
    return sum(lay.params(method, r) for lay in layouts)


def rank_for_budget(layouts: Iterable[BlockLayout], method: str, budget: int, max_rank: int | None = None) -> int:
    """The rank of ``method`` on ``layouts`` whose adapter weights come closest to ``budget``
    (ties go to the smaller rank; at least 1, at most ``max_rank``).

    Counts are linear in the rank, so this is one rounded division.  Weights trained besides
    the adapters (a new head) are the same whatever the rank and do not move the answer."""
    per_rank = sum(lay.params_per_rank(method) for lay in layouts)
    if per_rank == 0:
        raise ValueError("a parameter budget needs at least one adapted layer")
    rank, rest = divmod(budget, per_rank)
    if 2 * rest > per_rank:  # strictly closer to the next rank
        rank += 1
    rank = max(rank, 1)
    return rank if max_rank is None else min(rank, max_rank)


def equal_budget_rank(layouts: Iterable[BlockLayout], r: int, source: str = "lora", target: str = "symlora",
                      max_rank: int | None = None) -> int:
    """The ``target`` rank whose adapter weights on ``layouts`` come closest to ``source``'s
    at rank ``r``: LoRA at r on square layers of side n (2·n·r weights) pairs with SymLoRA
    at round(2·n·r / (n + 1)), just under 2r.  When the two methods adapt different layers
    (``all-linear`` skips shapes SymLoRA cannot tile), use :func:`rank_for_budget` with
    each method's own layers."""
    layouts = list(layouts)
    return rank_for_budget(layouts, target, total_params(layouts, source, r), max_rank)
