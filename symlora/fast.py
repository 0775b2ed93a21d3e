"""The fused training path: a frozen linear layer and its low-rank adapter in one autograd node.

Every adapter in this package computes ``y = x·Wᵀ + b + (x·D)·Uᵀ`` with a *down* factor
D (in × R) and an *up* factor U (out × R):

=====================  =============================  =============================
layer                  D (in × R)                     U (out × R)
=====================  =============================  =============================
LoRA                   Aᵀ                             s·B
SymLoRA, square        Q                              Q·diag(sΛ)
stacked (out = k·in)   Q·diag(sΛ)                     blockdiag(Q_1 … Q_k)
side (in = k·out)      blockdiag(Q_1 … Q_k)           Q·diag(sΛ)
=====================  =============================  =============================

Autograd through the plain formula spends its time on launches and on extra passes over
the activations, not on arithmetic: R is tiny next to in and out.  The Functions below
save only x (which the base layer saves anyway, in the dtype it computes in) and the thin
h = x·D, and return dx, dQ, dΛ (or dA, dB) from a handful of thin GEMMs plus R-sized
element-wise work.  ΔW is never formed, no block is visited in a Python loop, and the
update is always added in the compute dtype next to x·Wᵀ — never folded into a rounded copy
of W, where bf16 would swallow it.

Two choices are measured, not assumed (``bench/adapter_speed.py``), and live in
:data:`OPTIONS`:

* ``blocks``: a block factor is either densified to a block-diagonal matrix (one GEMM
  with zeros — on a GPU these thin GEMMs are bandwidth-bound, so the zeros are free) or
  applied block by block with one batched GEMM (k times fewer flops — better on a CPU).
* ``concat_forward``: when x must be cast anyway (autocast), the cast is written into a
  buffer [x | h] that is R columns wider and the base GEMM multiplies it by [W | U]: the
  adapter's up-product then costs R more steps of the GEMM's inner dimension instead of a
  second read-modify-write pass over y.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["OPTIONS", "FastPathOptions", "compute_dtype", "fast_path_options", "lora_linear", "symlora_linear"]


@dataclass
class FastPathOptions:
    """Switches of the fused path (module-global; see :func:`fast_path_options`).

    Attributes:
        enabled: use the fused path at all (off: the plain autograd formula).
        blocks: ``"dense"``, ``"batched"`` or ``"auto"`` (dense on CUDA, batched elsewhere).
        concat_forward: ``"auto"`` (when x needs a dtype cast anyway), ``"always"`` or ``"never"``.
        concat_backward: with a concat forward, get dx and g·U from one GEMM against [W | U]
            (one read of g fewer, at the price of a GEMM output R columns wider).
    """

    enabled: bool = True
    blocks: str = "auto"
    concat_forward: str = "auto"
    concat_backward: bool = False


OPTIONS = FastPathOptions()


@contextlib.contextmanager
def fast_path_options(**changes: object) -> Iterator[FastPathOptions]:
    """Temporarily change :data:`OPTIONS` (tests and benchmarks compare variants)."""
    before = dataclasses.replace(OPTIONS)
    for name, value in changes.items():
        if not hasattr(OPTIONS, name):
            raise AttributeError(f"unknown fast-path option {name!r}")
        setattr(OPTIONS, name, value)
    try:
        yield OPTIONS
    finally:
        for f in dataclasses.fields(FastPathOptions):
            setattr(OPTIONS, f.name, getattr(before, f.name))


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype ``F.linear(x, ...)`` computes in: autocast's dtype when autocast is on
    for x's device (float64 is never autocast), else x's own."""
    device = x.device.type
    if x.dtype != torch.float64 and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


def _dense_blocks(device: torch.device) -> bool:
    if OPTIONS.blocks == "auto":
        return device.type == "cuda"
    return OPTIONS.blocks == "dense"


# -- factors ----------------------------------------------------------------------------
# A factor F (features × R) is passed as (t, k): k == 1 → t is F itself; k > 1 → F is
# block-diagonal with k blocks and t = Q (n × k·r) holds them, block b in columns b·r….


def _project(a: Tensor, f: Tensor, k: int) -> Tensor:
    """a·F: (N, features) → (N, R).  For blocks, a transposed view of one batched
    (k, r, N) product — the orientation BLAS runs fastest for so thin an output."""
    if k == 1:
        return a @ f
    n, rr = f.shape
    rows = a.shape[0]
    out = torch.bmm(f.view(n, k, rr // k).permute(1, 2, 0), a.view(rows, k, n).permute(1, 2, 0))  # (k, r, N)
    return out.view(rr, rows).t()


def _add_expanded(c: Tensor, z: Tensor, f: Tensor, k: int) -> Tensor:
    """c + z·Fᵀ: (N, R) → (N, features).

    Eager: in place on c, one read-modify-write pass.  Under torch.compile: a separate
    product and a plain add, which Inductor fuses into c's next consumer (an out-of-place
    ``addmm`` would first copy c; functionalisation also can't replay an in-place batched
    product through a strided view)."""
    compiling = torch.compiler.is_compiling()
    if k == 1:
        return c + z @ f.t() if compiling else c.addmm_(z, f.t())
    n, rr = f.shape
    r, rows = rr // k, z.shape[0]
    zb, fb = z.view(rows, k, r).transpose(0, 1), f.view(n, k, r).permute(1, 2, 0)  # (k, N, r), (k, r, n)
    if compiling:
        return c + torch.bmm(zb, fb).transpose(0, 1).reshape(rows, k * n)
    c.view(rows, k, n).transpose(0, 1).baddbmm_(zb, fb)
    return c


def _factor_grad(a: Tensor, z: Tensor, k: int) -> Tensor:
    """aᵀ·z on F's structure: (features × R) for a dense factor, (n, k, r) for blocks.

    Computed as (zᵀ·a)ᵀ — a thin-by-wide product, which BLAS runs faster than the
    wide-by-thin one — and returned as a transposed view."""
    if k == 1:
        return (z.t() @ a).t()
    rows, feats = a.shape
    r, n = z.shape[1] // k, feats // k
    g = torch.bmm(z.view(rows, k, r).permute(1, 2, 0), a.view(rows, k, n).transpose(0, 1))  # (k, r, n)
    return g.permute(2, 0, 1)


def _block_diag(q: Tensor, k: int, dtype: torch.dtype) -> Tensor:
    """blockdiag(Q_1 … Q_k) as a dense (k·n × k·r) matrix: one fill, one strided copy."""
    n, rr = q.shape
    out = q.new_zeros(k * n, rr, dtype=dtype)
    out.view(k, n, k, rr // k).diagonal(dim1=0, dim2=2).copy_(q.view(n, k, rr // k).transpose(1, 2))
    return out


def _diagonal_blocks(dense: Tensor, k: int) -> Tensor:
    """The k diagonal blocks of a (k·n × k·r) matrix as an (n, k, r) view."""
    kn, rr = dense.shape
    return dense.view(k, kn // k, k, rr // k).diagonal(dim1=0, dim2=2).transpose(1, 2)


def _scaled_columns(q: Tensor, scale: Tensor | float, dtype: torch.dtype) -> Tensor:
    """(q · scale) in ``dtype``, one kernel in eager mode."""
    if torch.compiler.is_compiling():
        return (q * scale).to(dtype)
    return torch.mul(q, scale, out=q.new_empty(q.shape, dtype=dtype))


def _cat_columns(a: Tensor, b: Tensor, dtype: torch.dtype) -> Tensor:
    """[a | b] in ``dtype``; in eager mode each part is cast straight into place."""
    if torch.compiler.is_compiling():
        return torch.cat([a.to(dtype), b.to(dtype)], dim=1)
    out = a.new_empty((a.shape[0], a.shape[1] + b.shape[1]), dtype=dtype)
    out[:, : a.shape[1]].copy_(a)
    out[:, a.shape[1]:].copy_(b)
    return out


def _with_projection(x: Tensor, down: Tensor, kd: int, dtype: torch.dtype) -> Tensor:
    """[x | x·D] in ``dtype``: the cast x lands in a buffer with room for h beside it."""
    in_f = x.shape[1]
    if torch.compiler.is_compiling():
        xc = x.to(dtype)
        return torch.cat([xc, _project(xc, down, kd)], dim=1)
    out = x.new_empty((x.shape[0], in_f + down.shape[1]), dtype=dtype)
    xc = out[:, :in_f]
    xc.copy_(x)
    if kd == 1:
        torch.mm(xc, down, out=out[:, in_f:])
    else:
        out[:, in_f:].copy_(_project(xc, down, kd))
    return out


# -- the shared forward and backward ------------------------------------------------------


def _forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, down: Tensor, kd: int, up: Tensor, ku: int,
             dtype: torch.dtype) -> tuple[Tensor, list[Tensor]]:
    """y = x·Wᵀ + b + (x·D)·Uᵀ in ``dtype``, and the tensors the backward needs (the
    caller saves them, with its own, in one ``save_for_backward``)."""
    in_f = x.shape[1]
    b = None if bias is None else bias.to(dtype)
    concat = ku == 1 and (
        OPTIONS.concat_forward == "always" or (OPTIONS.concat_forward == "auto" and x.dtype != dtype)
    )
    if concat:
        w_all = _cat_columns(weight, up, dtype)  # [W | U]
        x_all = _with_projection(x, down, kd, dtype)  # [x | h]
        y = x_all @ w_all.t() if b is None else torch.addmm(b, x_all, w_all.t())
        saved = [x_all, w_all, down]
    else:
        xc, wc = x.to(dtype), weight.to(dtype)
        h = _project(xc, down, kd)
        y = xc @ wc.t() if b is None else torch.addmm(b, xc, wc.t())
        y = _add_expanded(y, h, up, ku)
        saved = [xc, h, wc, down, up]
    ctx.concat, ctx.in_f, ctx.kd, ctx.ku = concat, in_f, kd, ku
    ctx.compute_dtype, ctx.x_dtype = dtype, x.dtype
    return y, saved


def _backward(ctx, saved: tuple[Tensor, ...], grad: Tensor, need_x: bool, need_down: bool, need_up: bool,
              down_transposed: bool = False):
    """(dx, dD, dU) for what :func:`_forward` saved; dD, dU on their factor's structure
    (``down_transposed``: dDᵀ = uᵀ·x for a dense D, the layout LoRA's A wants)."""
    in_f, kd, ku = ctx.in_f, ctx.kd, ctx.ku
    g = grad.to(ctx.compute_dtype)
    if ctx.concat:
        x_all, w_all, down = saved
        xc, h, wc, up = x_all[:, :in_f], x_all[:, in_f:], w_all[:, :in_f], w_all[:, in_f:]
    else:
        xc, h, wc, down, up = saved
    dx = u = d_down = d_up = None
    if need_x and ctx.concat and OPTIONS.concat_backward:
        dx_all = g @ w_all  # [g·W | g·U]
        dx, u = dx_all[:, :in_f], dx_all[:, in_f:]
    else:
        if need_x or need_down:
            u = _project(g, up, ku)  # g·U
        if need_x:
            dx = g @ wc
    if need_x:
        dx = _add_expanded(dx, u, down, kd)
        dx = dx.to(ctx.x_dtype)
    if need_down:
        d_down = u.t() @ xc if down_transposed and kd == 1 else _factor_grad(xc, u, kd)
    if need_up:
        d_up = _factor_grad(g, h, ku)
    return dx, d_down, d_up


# -- SymLoRA --------------------------------------------------------------------------------


class _SymLoraLinear(torch.autograd.Function):
    """y = x·Wᵀ + b + x·ΔWᵀ, ΔW's blocks s·Q_b·diag(Λ_b)·Q_bᵀ; gradients for x, Q and Λ."""

    @staticmethod
    def forward(ctx, x, weight, bias, q, lam, layout: str, k: int, scaling: float):
        dtype = compute_dtype(x)
        lam_s = lam * scaling
        scaled = _scaled_columns(q, lam_s, dtype)  # Q·diag(sΛ): the dense factor
        if k == 1:
            plain, kp, dense_plain = q.to(dtype), 1, False
        elif _dense_blocks(x.device):
            plain, kp, dense_plain = _block_diag(q, k, dtype), 1, True
        else:
            plain, kp, dense_plain = q.to(dtype), k, False
        if layout == "stacked":
            y, saved = _forward(ctx, x, weight, bias, scaled, 1, plain, kp, dtype)
        else:
            y, saved = _forward(ctx, x, weight, bias, plain, kp, scaled, 1, dtype)
        ctx.save_for_backward(*saved, q, lam_s)
        ctx.layout, ctx.k, ctx.scaling, ctx.dense_plain = layout, k, scaling, dense_plain
        return y

    @staticmethod
    def backward(ctx, grad_y):
        need_x = ctx.needs_input_grad[0]
        need_adapter = ctx.needs_input_grad[3] or ctx.needs_input_grad[4]
        *saved, q, lam_s = ctx.saved_tensors
        dx, d_down, d_up = _backward(ctx, tuple(saved), grad_y, need_x, need_adapter, need_adapter)
        dq = dlam = None
        if need_adapter:
            k = ctx.k
            n, rr = q.shape
            d_scaled, d_plain = (d_down, d_up) if ctx.layout == "stacked" else (d_up, d_down)
            if ctx.dense_plain:
                plain_blocks = _diagonal_blocks(d_plain, k)
            else:  # already (n, k, r) for batched blocks; (n, r) for a square layer
                plain_blocks = d_plain.view(n, k, rr // k)
            # Q appears twice: once plain, once scaled column-wise by sΛ.
            dq = torch.addcmul(plain_blocks, d_scaled.view(n, k, rr // k), lam_s.view(k, rr // k))
            dq = dq.reshape(n, rr).to(q.dtype)
            dlam = ((d_scaled * q).sum(0) * ctx.scaling).to(lam_s.dtype)
        return dx, None, None, dq, dlam, None, None, None


def symlora_linear(x: Tensor, weight: Tensor, bias: Tensor | None, q: Tensor, lam: Tensor, layout: str, k: int,
                   scaling: float) -> Tensor:
    """``F.linear(x, W + ΔW, b)`` for a 2-D x, ΔW = SymLoRA's update, computed without ΔW."""
    return _SymLoraLinear.apply(x, weight, bias, q, lam, layout, k, scaling)


# -- LoRA ----------------------------------------------------------------------------------


class _LoraLinear(torch.autograd.Function):
    """y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ; gradients for x, A and B."""

    @staticmethod
    def forward(ctx, x, weight, bias, a, b, scaling: float):
        dtype = compute_dtype(x)
        down = a.t().to(dtype)  # (in × r)
        up = _scaled_columns(b, scaling, dtype)  # (out × r)
        y, saved = _forward(ctx, x, weight, bias, down, 1, up, 1, dtype)
        ctx.save_for_backward(*saved)
        ctx.scaling, ctx.a_dtype, ctx.b_dtype = scaling, a.dtype, b.dtype
        return y

    @staticmethod
    def backward(ctx, grad_y):
        need_x, need_a, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[3], ctx.needs_input_grad[4]
        dx, d_down, d_up = _backward(ctx, ctx.saved_tensors, grad_y, need_x, need_a, need_b, down_transposed=True)
        da = None if d_down is None else d_down.to(ctx.a_dtype)
        db = None if d_up is None else (d_up * ctx.scaling).to(ctx.b_dtype)
        return dx, None, None, da, db, None


def lora_linear(x: Tensor, weight: Tensor, bias: Tensor | None, a: Tensor, b: Tensor, scaling: float) -> Tensor:
    """``F.linear(x, W + s·B·A, b)`` for a 2-D x, computed without forming B·A."""
    return _LoraLinear.apply(x, weight, bias, a, b, scaling)
