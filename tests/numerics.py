"""Tolerances from the arithmetic, not from one machine's rounding.

Two float computations of the same mathematical value (merged vs unmerged weights, our
adapter vs PEFT's, a saved update vs its rebuild) differ only by rounding, and how much
rounding a CPU does depends on its kernels and thread count.  So a fixed ``atol=1e-6`` on
float32 outputs of magnitude ~1 is a coin toss (it is ~8 ulps).  The bounds here scale
with what the numbers are made of:

* :func:`sum_bound` — an elementwise bound for a value that went through ``roundings``
  float operations on terms whose magnitudes are ``terms`` (each rounding errs by at most
  half an ulp of its result, ``eps / 2`` relative; Higham, *Accuracy and Stability of
  Numerical Algorithms*, ch. 2–3).
* :func:`rounding_noise` — how far a model's float32 output is from the same model in
  float64, i.e. the size of the model's own rounding error on this input, on this
  machine.  Two float32 evaluations of the same function that differ only in the order of
  their operations land within a few times this noise of each other; a real mistake
  (ΔW added twice, a missing scale) is orders of magnitude larger.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn

NOISE_FACTOR = 8.0  # how many "own rounding errors" two orderings of one computation may differ by


def eps(dtype: torch.dtype) -> float:
    """Machine epsilon (the gap between 1 and the next float) of ``dtype``."""
    return torch.finfo(dtype).eps


def sum_bound(*terms: Tensor, roundings: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Elementwise bound on the rounding error of a value built from ``terms``
    (absolute magnitudes) in ``roundings`` float operations: ``roundings · eps · Σ|term|``
    — twice the first-order bound ``roundings · (eps/2) · Σ|term|``, for second-order terms."""
    total = sum(t.abs().double() for t in terms)
    return roundings * eps(dtype) * total


def assert_within(actual: Tensor, expected: Tensor, bound: Tensor | float, msg: str = "") -> None:
    """``|actual − expected| ≤ bound`` elementwise, with a readable failure."""
    diff = (actual.double() - expected.double()).abs()
    bound_t = torch.as_tensor(bound, dtype=torch.float64)
    worst = (diff - bound_t).argmax()
    if not bool((diff <= bound_t).all()):
        flat_bound = bound_t.expand_as(diff).reshape(-1)[worst]
        raise AssertionError(f"{msg} differs by {diff.reshape(-1)[worst]:.3g} at flat index {int(worst)}, "
                             f"beyond the rounding bound {float(flat_bound):.3g}")


@torch.no_grad()
def rounding_noise(model: nn.Module, forward: Callable[[nn.Module, torch.dtype], Tensor]) -> float:
    """``max |f32(x) − f64(x)|`` for ``forward(model, dtype)`` — the model's own float32
    rounding error here — floored at ``eps · max|f(x)|`` (one ulp of the output scale)."""
    double = copy.deepcopy(model).double()
    exact = forward(double, torch.float64)
    single = forward(model, torch.float32).double()
    return max(float((single - exact).abs().max()), eps(torch.float32) * float(exact.abs().max()))


def assert_same_up_to_rounding(actual: Tensor, expected: Tensor, noise: float, msg: str = "") -> None:
    """Two float32 results of one function agree within ``NOISE_FACTOR`` × its rounding noise."""
    assert_within(actual, expected, NOISE_FACTOR * noise, msg)
