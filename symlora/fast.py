"""The fused training path: a frozen linear layer and its low-rank adapter in one autograd node.

Every adapter here computes ``y = x·Wᵀ + b + (x·D)·Uᵀ`` with a thin *down* factor D
(in × R) and a thin *up* factor U (out × R).  For SymLoRA both are built from the one
matrix Q (n × k·r) — whole, or as k blocks Q_b along a side k·n features wide:

=====================  ====================  ====================
layer                  D (in × R)            U (out × R)
=====================  ====================  ====================
LoRA                   Aᵀ                    s·B
SymLoRA, square        s·Q                   Q·diag(Λ)
stacked (out = k·in)   s·Q                   blockdiag(Q_b·diag(Λ_b))
side (in = k·out)      blockdiag(s·Q_b)      Q·diag(Λ)
=====================  ====================  ====================

The scaling s sits in the down factor and Λ in the up factor, so both ride along casts
that are needed anyway.  A block factor is applied with one batched product over strided
views (no block-diagonal matrix, no Python loop over blocks).

Two ways to add the update, chosen by the compute dtype (:func:`fast_path_options`):

* **fold** (float32/float64, the CPU's case, when the batch has at least as many rows as
  the layer has inputs and outputs): W + ΔW is formed once per forward and once per backward
  (one small GEMM of inner size R each), so the output and the input gradient come from the
  same single GEMM as the frozen layer's.  The adapter then costs only the four thin GEMMs
  its gradients need: h = x·D, u = g·U, Dᵀ-side xᵀ·u and U-side gᵀ·h.  With fewer rows
  (generating token by token) writing W + ΔW would cost more than the update itself.
* **add** (autocast to bf16/fp16, the GPU's case): folding would round ΔW into a bf16
  copy of W, where it is lost (|ΔW| ≪ |W|).  The update is added to x·Wᵀ in the compute
  dtype with one in-place GEMM (``addmm_`` / ``baddbmm_``), likewise for the input gradient.

The backward shares its intermediates: with h = x·D and u = g·U it computes
M = (xᵀ·u on D's structure) + (gᵀ·h on U's structure) with two thin GEMMs (the second
accumulating into the first), then dQ = M·diag(Λ) and dΛ from the first term alone
(dΛ_j = Σ_i Q_ij (xᵀu)_ij — the same number the second term would give, by symmetry).
Saved for backward: x and W in the compute dtype (under autocast the frozen layer saves
its cast W too), the thin h and the R-column factors; never ΔW or W + ΔW (a fold is formed
again in the backward).

The functions below take plain tensors and the block counts of D and U (``k_in`` and
``k_out`` of :class:`symlora.blocks.BlockLayout`, read once when a layer is built), so a
caller with a leading run dimension can reuse them per run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import typing
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["FastPathOptions", "compute_dtype", "current_options", "fast_path_options", "fused_path_enabled", "lora_linear",
           "symlora_linear"]

Fold = Literal["auto", "always", "never"]
_R = TypeVar("_R")


@dataclass(frozen=True)
class FastPathOptions:
    """Switches of the fused path, in effect in one thread or task (see :func:`fast_path_options`).

    Attributes:
        enabled: use the fused path at all (off: the plain autograd formula).
        fold: ``"auto"`` — form W + ΔW when the layer computes in float32/float64 and the
            batch has at least max(in, out) rows, add the update separately otherwise;
            ``"always"`` — fold in float32/float64 whatever the rows; ``"never"``.  Never in
            bf16/fp16, where ΔW would be rounded away.
    """

    enabled: bool = True
    fold: Fold = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise TypeError(f"fast-path option enabled must be True or False, got {self.enabled!r}")
        if self.fold not in ("auto", "always", "never"):
            raise ValueError(f"fast-path option fold must be 'auto', 'always' or 'never', got {self.fold!r}")


# A context variable, not a module global: training threads of one process (the app runs
# several) each see their own choice, and a benchmark switching variants cannot change what
# another thread's forward does halfway through.  A new thread starts from the defaults.
_OPTIONS: ContextVar[FastPathOptions] = ContextVar(
    "symlora_fast_path_options", default=FastPathOptions()  # noqa: B039 — frozen, so safe to share
)


def current_options() -> FastPathOptions:
    """The fast-path options in effect here (this thread / asyncio task)."""
    return _OPTIONS.get()


# What a forward reads of the options.  Dynamo in some torch releases (2.11) cannot trace
# ``ContextVar.get`` (a fullgraph compile fails), so under torch.compile these two are read once,
# when the graph is traced, and their values are compiled in: choose the options before compiling.
def _read_once_when_traced(reader: Callable[[], _R]) -> Callable[[], _R]:
    return typing.cast(Callable[[], _R], torch.compiler.assume_constant_result(reader))


@_read_once_when_traced
def fused_path_enabled() -> bool:
    """Whether adapter layers take the fused path here (:attr:`FastPathOptions.enabled`)."""
    return _OPTIONS.get().enabled


@_read_once_when_traced
def _fold_option() -> str:
    return _OPTIONS.get().fold


@contextlib.contextmanager
def fast_path_options(**changes: Any) -> Iterator[FastPathOptions]:
    """Change the fast-path options inside a ``with`` block, for this thread / task only.

    ``with fast_path_options(enabled=False): ...`` runs the plain autograd formula;
    ``fold="never"`` / ``"always"`` picks a variant (tests and benchmarks compare them).
    Other threads keep their own options; the previous ones come back on exit."""
    unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(FastPathOptions)})
    if unknown:
        raise AttributeError(f"unknown fast-path option {unknown[0]!r}")
    token = _OPTIONS.set(dataclasses.replace(_OPTIONS.get(), **changes))
    try:
        yield _OPTIONS.get()
    finally:
        _OPTIONS.reset(token)


def __getattr__(name: str) -> object:
    if name == "OPTIONS":  # the former process-global switch
        raise AttributeError("symlora.fast.OPTIONS is gone: use `with symlora.fast.fast_path_options(enabled=False):` "
                             "(per thread) and symlora.fast.current_options()")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype ``F.linear(x, ...)`` computes in: autocast's dtype when autocast is on
    for x's device (float64 is never autocast), else x's own."""
    device = x.device.type
    if x.dtype != torch.float64 and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


def _folds(dtype: torch.dtype, rows: int, in_features: int, out_features: int) -> bool:
    """Whether to form W + ΔW (see the module docstring and :class:`FastPathOptions`)."""
    fold = _fold_option()
    if fold == "never" or dtype not in (torch.float32, torch.float64):
        return False
    return fold == "always" or rows >= max(in_features, out_features)


# -- factor products ------------------------------------------------------------------------
# A factor F (features × R) is passed as (t, k): k == 1 → t is F itself; k > 1 → F is
# block-diagonal, features = k·n, and t (n × k·r) holds the blocks: block b in columns b·r….
# Results with R columns may come back as transposed views: BLAS takes either layout.


def cast(t: Tensor, dtype: torch.dtype) -> Tensor:
    """t in ``dtype`` (t itself when it is already: no operator call)."""
    return t if t.dtype == dtype else t.to(dtype)


def scaled(t: Tensor, factor: Tensor | float, dtype: torch.dtype) -> Tensor:
    """t·factor (a scalar or one factor per column) in ``dtype`` and t's shape, contiguous:
    one kernel in eager mode."""
    if torch.compiler.is_compiling():
        return (t * factor).to(dtype)
    if t.dtype == dtype and t.is_contiguous():
        return t * factor
    return torch.mul(t, factor, out=t.new_empty(t.shape, dtype=dtype))


def blocks(a: Tensor, k: int, transpose: bool = False) -> Tensor:
    """The k column blocks of a (rows × k·m) matrix as a (k, rows, m) view — or, with
    ``transpose``, their transposes (k, m, rows) — in one strided view."""
    rows, cols = a.shape
    m = cols // k
    if torch.compiler.is_compiling():
        v = a.view(rows, k, m).transpose(0, 1)
        return v.transpose(1, 2) if transpose else v
    s0, s1 = a.stride()
    if transpose:
        return a.as_strided((k, m, rows), (m * s1, s1, s0))
    return a.as_strided((k, rows, m), (m * s1, s0, s1))


def project(a: Tensor, f: Tensor, k: int) -> Tensor:
    """a·F: (N, features) → (N, R).  Blocks: one batched product (k, N, n)·(k, n, r) over
    strided views, written into an (N, R) matrix."""
    if k == 1:
        return torch.mm(a, f)
    if torch.compiler.is_compiling():
        return torch.bmm(blocks(a, k), blocks(f, k)).transpose(0, 1).reshape(a.shape[0], f.shape[1])
    out = a.new_empty(a.shape[0], f.shape[1])
    torch.bmm(blocks(a, k), blocks(f, k), out=blocks(out, k))
    return out


def expand_into(c: Tensor, z: Tensor, f: Tensor, k: int) -> Tensor:
    """c + z·Fᵀ: (N, R) → (N, features), in place on c in eager mode (one read-modify-write
    pass).  Under torch.compile: a separate product and a plain add, which Inductor fuses
    (functionalisation can't replay an in-place batched product through a strided view)."""
    if torch.compiler.is_compiling():
        if k == 1:
            return c + z @ f.t()
        return c + torch.bmm(blocks(z, k), blocks(f, k, True)).transpose(0, 1).reshape(c.shape)
    if k == 1:
        return c.addmm_(z, f.t())
    blocks(c, k).baddbmm_(blocks(z, k), blocks(f, k, True))
    return c


def factor_grad_t(a: Tensor, z: Tensor, k: int, into: Tensor | None = None) -> Tensor:
    """(aᵀ·z)ᵀ = zᵀ·a on the factor's structure, as a (R × n) matrix laid out like Qᵀ:
    for blocks, row b·r + c holds block b's column c.  ``into``: accumulate onto it
    (in place in eager mode) and return it."""
    compiling = torch.compiler.is_compiling()
    if k == 1:
        if into is None:
            return torch.mm(z.t(), a)
        return into + z.t() @ a if compiling else into.addmm_(z.t(), a)
    rr, n = z.shape[1], a.shape[1] // k
    if into is None or compiling:
        out = torch.bmm(blocks(z, k, True), blocks(a, k)).view(rr, n)  # (k, r, n)
        return out if into is None else into + out
    into.view(k, rr // k, n).baddbmm_(blocks(z, k, True), blocks(a, k))
    return into


def fold_weight(weight: Tensor, down: Tensor, kd: int, up: Tensor, ku: int, dtype: torch.dtype) -> Tensor:
    """W + U·Dᵀ in ``dtype``, as a matrix to pass to ``F.linear`` (out × in; it may be a
    transposed view).  Only one of D, U may have blocks: the update is then block-diagonal,
    and each block is U_b·D_bᵀ (one batched product of inner size r)."""
    w = cast(weight, dtype)
    if kd == 1 and ku == 1:
        return torch.addmm(w, up, down.t())
    if ku > 1:  # stacked: W (k·n × n), block b = rows b·n…
        n = up.shape[0]
        return torch.baddbmm(w.view(ku, n, n), blocks(up, ku), blocks(down, ku, True)).view(ku * n, n)
    # side: W (n × k·n), block b = columns b·n…: build Wᵀ's blocks (k, n, n), hand back the
    # transposed view
    n = down.shape[0]
    return torch.baddbmm(blocks(w, kd, True), blocks(down, kd), blocks(up, kd, True)).view(kd * n, n).t()


# -- SymLoRA --------------------------------------------------------------------------------


def symlora_factors(q: Tensor, lam: Tensor, scaling: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(s·Q, Q·diag(Λ)) in ``dtype``: the down and the up factor's columns."""
    down = q if scaling == 1.0 and q.dtype == dtype else scaled(q, scaling, dtype)
    return down, scaled(q, lam, dtype)


def low_rank_linear(x: Tensor, weight: Tensor, bias: Tensor | None, down: Tensor, up: Tensor, kd: int, ku: int,
                  fold: bool, need_h: bool) -> tuple[Tensor, Tensor | None]:
    """y = x·Wᵀ + b + (x·D)·Uᵀ for a 2-D x already in the compute dtype, and h = x·D
    (``None`` when folding and not ``need_h``)."""
    dtype = x.dtype
    b = None if bias is None else cast(bias, dtype)
    if fold:
        h = project(x, down, kd) if need_h else None
        return F.linear(x, fold_weight(weight, down, kd, up, ku, dtype), b), h
    h = project(x, down, kd)
    return expand_into(F.linear(x, cast(weight, dtype), b), h, up, ku), h


def symlora_grads(xc: Tensor, g: Tensor, h: Tensor, weight: Tensor, down: Tensor, up: Tensor, q: Tensor,
                  lam: Tensor, kd: int, ku: int, fold: bool, need_x: bool, need_adapter: bool
                  ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """(dx, dQ, dΛ) from what :func:`low_rank_linear` used; dx in the compute dtype.

    With s·u = g·(s·Q) on U's structure: dx = g·W + (s·u)·(Q·diag Λ)ᵀ on D's structure,
    dQ = (xᵀ·s·u [D's structure] + gᵀ·h [U's structure])·diag(Λ), dΛ_j = Σ_i Q_ij (xᵀ·s·u)_ij."""
    us = project(g, down, ku) if need_adapter or (need_x and not fold) else None
    dx = dq = dlam = None
    if need_x:
        if fold:
            dx = torch.mm(g, fold_weight(weight, down, kd, up, ku, g.dtype))
        else:
            assert us is not None
            dx = expand_into(torch.mm(g, cast(weight, g.dtype)), us, up, kd)
    if need_adapter:
        assert us is not None
        pt = factor_grad_t(xc, us, kd)  # (xᵀ·s·u)ᵀ, laid out like Qᵀ
        dlam = cast((q.t() * pt).sum(1), lam.dtype)
        mt = factor_grad_t(g, h, ku, into=pt)  # += (gᵀ·h)ᵀ
        dq = scaled(mt.t(), lam, q.dtype)
    return dx, dq, dlam


class _SymLoraLinear(torch.autograd.Function):
    """y = x·Wᵀ + b + x·ΔWᵀ, ΔW's blocks s·Q_b·diag(Λ_b)·Q_bᵀ; gradients for x, Q and Λ."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, q: Tensor, lam: Tensor, kd: int, ku: int,
                scaling: float) -> Tensor:
        dtype = compute_dtype(x)
        fold = _folds(dtype, x.shape[0], x.shape[1], weight.shape[0])
        down, up = symlora_factors(q, lam, scaling, dtype)
        xc = cast(x, dtype)
        need_adapter = ctx.needs_input_grad[3] or ctx.needs_input_grad[4]
        w = cast(weight, dtype)  # saved in the compute dtype, as the frozen layer's own backward does
        y, h = low_rank_linear(xc, w, bias, down, up, kd, ku, fold, need_adapter)
        ctx.save_for_backward(xc, h, w, down, up, q, lam)
        ctx.kd, ctx.ku, ctx.fold, ctx.x_dtype = kd, ku, fold, x.dtype
        return y

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor) -> tuple[Tensor | None, ...]:
        xc, h, w, down, up, q, lam = ctx.saved_tensors
        need_x, need_adapter = ctx.needs_input_grad[0], ctx.needs_input_grad[3] or ctx.needs_input_grad[4]
        dx, dq, dlam = symlora_grads(xc, cast(grad_y, xc.dtype), h, w, down, up, q, lam, ctx.kd, ctx.ku, ctx.fold,
                                     need_x, need_adapter)
        if dx is not None:
            dx = cast(dx, ctx.x_dtype)
        return dx, None, None, dq, dlam, None, None, None


def _needs_graph(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def symlora_linear(x: Tensor, weight: Tensor, bias: Tensor | None, q: Tensor, lam: Tensor, k_in: int, k_out: int,
                   scaling: float) -> Tensor:
    """``F.linear(x, W + ΔW, b)`` for a 2-D x, ΔW = SymLoRA's update, computed without ΔW.

    ``k_in``/``k_out``: ΔW's blocks along the input and the output
    (:class:`symlora.blocks.BlockLayout`), i.e. the block counts of the down and the up factor."""
    if _needs_graph(x, q, lam):
        return _SymLoraLinear.apply(x, weight, bias, q, lam, k_in, k_out, scaling)
    dtype = compute_dtype(x)  # inference: no autograd node, no h
    down, up = symlora_factors(q, lam, scaling, dtype)
    return low_rank_linear(cast(x, dtype), weight, bias, down, up, k_in, k_out,
                           _folds(dtype, x.shape[0], x.shape[1], weight.shape[0]), False)[0]


# -- LoRA ----------------------------------------------------------------------------------


def lora_factors(a: Tensor, b: Tensor, scaling: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(Aᵀ, s·B) in ``dtype``: LoRA's down (in × r) and up (out × r) factor."""
    return cast(a, dtype).t(), scaled(b, scaling, dtype)


class _LoraLinear(torch.autograd.Function):
    """y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ; gradients for x, A and B."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, a: Tensor, b: Tensor,
                scaling: float) -> Tensor:
        dtype = compute_dtype(x)
        fold = _folds(dtype, x.shape[0], x.shape[1], weight.shape[0])
        down, up = lora_factors(a, b, scaling, dtype)
        xc = cast(x, dtype)
        w = cast(weight, dtype)
        y, h = low_rank_linear(xc, w, bias, down, up, 1, 1, fold, ctx.needs_input_grad[4])
        ctx.save_for_backward(xc, h, w, down, up)
        ctx.fold, ctx.scaling, ctx.x_dtype, ctx.a_dtype, ctx.b_dtype = fold, scaling, x.dtype, a.dtype, b.dtype
        return y

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor) -> tuple[Tensor | None, ...]:
        xc, h, weight, down, up = ctx.saved_tensors
        need_x, need_a, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[3], ctx.needs_input_grad[4]
        g = cast(grad_y, xc.dtype)
        v = torch.mm(g, up) if need_x and not ctx.fold or need_a else None  # g·(s·B) = ∂L/∂h
        dx = da = db = None
        if need_x:
            if ctx.fold:
                dx = torch.mm(g, fold_weight(weight, down, 1, up, 1, g.dtype))
            else:
                assert v is not None
                dx = expand_into(torch.mm(g, cast(weight, g.dtype)), v, down, 1)
            dx = cast(dx, ctx.x_dtype)
        if need_a:
            assert v is not None
            da = cast(torch.mm(v.t(), xc), ctx.a_dtype)  # (r × in), A's layout
        if need_b:
            db = scaled(torch.mm(h.t(), g).t(), ctx.scaling, ctx.b_dtype)  # s·gᵀ·h, B's layout
        return dx, None, None, da, db, None


def lora_linear(x: Tensor, weight: Tensor, bias: Tensor | None, a: Tensor, b: Tensor, scaling: float) -> Tensor:
    """``F.linear(x, W + s·B·A, b)`` for a 2-D x, computed without forming B·A."""
    if _needs_graph(x, a, b):
        return _LoraLinear.apply(x, weight, bias, a, b, scaling)
    dtype = compute_dtype(x)
    down, up = lora_factors(a, b, scaling, dtype)
    return low_rank_linear(cast(x, dtype), weight, bias, down, up, 1, 1, _folds(dtype, x.shape[0], x.shape[1], weight.shape[0]),
                           False)[0]
