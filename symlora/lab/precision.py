"""The compute dtype of a run: bf16 autocast where the hardware runs it natively, else float32.

    dtype = compute_dtype(device, "auto")      # torch.bfloat16 or torch.float32
    prepare_model(model, device, dtype)        # once, on the run's own copy
    with autocast(device, dtype):
        loss = task.loss(model, batch)

Choices (``compute_dtype``'s ``choice``; the lab's runs use ``"auto"``):

* ``"auto"``: bf16 autocast on CUDA (as always) and on CPUs with native bf16 matrix units
  (AVX512-BF16 or AMX-BF16, through oneDNN), float32 elsewhere.  The process environment
  variable ``SYMLORA_CPU_DTYPE`` (``float32`` / ``bfloat16``) overrides ``auto`` on the CPU —
  a server operator's switch.
* ``"float32"``: no autocast anywhere (the reference; exact comparisons pin it).
* ``"bfloat16"``: bf16 autocast, also on a CPU without native support (slow there).

Why on the CPU: measured on a Xeon with AMX (``bench/cpu_bf16.py``, one thread, CPU time),
the digits preset's ViT step costs 0.62–0.71× float32's and an evaluation pass 0.42–0.59×
(``bench/results/cpu_bf16_*.json``) — once the
attention is computed by its plain formula: the CPU's fused (flash) attention kernel runs
its bf16 backward ~17× slower than float32's, so :func:`prepare_model` turns timm's fused
attention off for bf16 CPU runs.  Without native bf16, oneDNN emulates it and it is slower
than float32, hence the probe.

The master weights, the optimizer state and the loss stay float32 (autocast casts the
matrix products' inputs only); the result's weights are float32 either way.
"""

from __future__ import annotations

import functools
import logging
import os
from contextlib import AbstractContextManager

import torch
from torch import nn

log = logging.getLogger(__name__)

DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16")
ENV_CPU_DTYPE = "SYMLORA_CPU_DTYPE"
_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16-autocast"}


def check_dtype(choice: str) -> str:
    """``choice`` if it is one of :data:`DTYPES`, else a one-line ``ValueError``."""
    if choice not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {choice!r}")
    return choice


@functools.cache
def cpu_bf16_native() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX-BF16 via oneDNN).

    Asked once per process: the CPU's feature flags as torch reports them, then a tiny
    probe (a bf16 matrix product under autocast must come out bf16 and close to float32's).
    Any doubt — an older torch without the queries, no oneDNN, a failing probe — says False.
    """
    if not torch.backends.mkldnn.is_available():
        return False
    queries = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    try:
        if not any(query() for query in queries if query is not None):
            return False
        a = torch.linspace(-1, 1, 64 * 32).reshape(64, 32)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            product = a @ a.t()
        exact = a @ a.t()
        ok = product.dtype == torch.bfloat16 and bool(torch.allclose(product.float(), exact, rtol=0.02, atol=0.05))
    except (RuntimeError, AttributeError) as error:  # a build without the kernels
        log.info("bf16 probe failed (%s): float32 on this CPU", error)
        return False
    return ok


def compute_dtype(device: torch.device | str, choice: str = "auto") -> torch.dtype:
    """The dtype a run on ``device`` computes its matrix products in, for ``choice``."""
    device = torch.device(device)
    check_dtype(choice)
    if choice == "auto" and device.type == "cpu":
        override = os.environ.get(ENV_CPU_DTYPE, "").strip()
        if override:
            if override not in ("float32", "bfloat16"):
                raise ValueError(f"{ENV_CPU_DTYPE} must be float32 or bfloat16, got {override!r}")
            choice = override
    if choice == "float32":
        return torch.float32
    if choice == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda" or (device.type == "cpu" and cpu_bf16_native()):
        return torch.bfloat16
    return torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    """How a run key and a result name the compute dtype (``float32``, ``bfloat16-autocast``)."""
    return _NAMES[dtype]


def autocast(device: torch.device | str, dtype: torch.dtype) -> AbstractContextManager[object]:
    """The autocast context for a run's forward passes (disabled for float32)."""
    device_type = torch.device(device).type
    if dtype == torch.float32:
        return torch.autocast(device_type if device_type in ("cuda", "cpu") else "cpu", enabled=False)
    return torch.autocast(device_type, dtype=dtype)


def prepare_model(model: nn.Module, device: torch.device | str, dtype: torch.dtype) -> None:
    """Adjust the run's own model for its dtype, in place: for bf16 on the CPU, attention by
    its plain formula instead of the fused kernel (timm's ``fused_attn`` flag), whose bf16
    backward is far slower there.  The results are the same up to rounding."""
    if torch.device(device).type != "cpu" or dtype == torch.float32:
        return
    for module in model.modules():
        if isinstance(getattr(module, "fused_attn", None), bool):
            module.fused_attn = False


def evaluation_dtype(device: torch.device | str, choice: str = "auto") -> torch.dtype:
    """The dtype evaluations compute in: the run's on the CPU (where bf16 makes an
    evaluation pass ~2.4× cheaper), float32 on accelerators (as before: evaluations there
    are a small share of a run, and stacked and solo evaluations stay comparable)."""
    return compute_dtype(device, choice) if torch.device(device).type == "cpu" else torch.float32
