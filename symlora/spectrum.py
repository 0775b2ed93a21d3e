"""What an adapter learned, seen through the spectrum of its update ΔW.

For a SymLoRA block ΔW = s·Q·diag(Λ)·Qᵀ is symmetric, so it has real, signed
eigenvalues — but Q is not orthonormal, so Λ itself is *not* the spectrum.  With the
thin QR factorisation Q = U·R (U orthonormal), ΔW = U·(s·R·diag(Λ)·Rᵀ)·Uᵀ: the non-zero
eigenvalues of ΔW are those of the r×r symmetric matrix s·R·diag(Λ)·Rᵀ.  Likewise the
singular values of a LoRA update s·B·A are those of s·R_B·R_Aᵀ.  Both cost O(n·r²),
never an n×n decomposition.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers import LoraLayer, SymLoraLayer
from .model import adapter_layers


def _sorted_by_magnitude(values: Tensor) -> Tensor:
    return values.gather(-1, values.abs().argsort(dim=-1, descending=True))


def _pad(values: Tensor, r: int) -> Tensor:
    missing = r - values.shape[-1]
    return torch.nn.functional.pad(values, (0, missing)) if missing > 0 else values


@torch.no_grad()
def symlora_eigenvalues(layer: SymLoraLayer) -> Tensor:
    """Eigenvalues of each block's ΔW (scaling included), shape (k, r), sorted by
    decreasing magnitude within a block."""
    q = layer.q_blocks().double().permute(1, 0, 2)  # (k, n, r)
    lam = layer.lambda_blocks().double() * layer.scaling  # (k, r)
    _, rr = torch.linalg.qr(q)  # (k, min(n, r), r)
    core = rr @ torch.diag_embed(lam) @ rr.transpose(-1, -2)
    eig = torch.linalg.eigvalsh((core + core.transpose(-1, -2)) / 2)
    return _pad(_sorted_by_magnitude(eig), layer.r).float()


@torch.no_grad()
def lora_singular_values(layer: LoraLayer) -> Tensor:
    """Singular values of ΔW = s·B·A, shape (1, r), largest first."""
    _, rb = torch.linalg.qr(layer.lora_B.weight.double())  # B = U_B·R_B
    _, ra = torch.linalg.qr(layer.lora_A.weight.double().T)  # Aᵀ = U_A·R_A
    sv = torch.linalg.svdvals(rb @ ra.T) * layer.scaling
    return _pad(sv, layer.r).float().unsqueeze(0)


def spectrum(model: nn.Module) -> dict[str, Tensor]:
    """Per adapted module path, a (blocks, r) tensor: ΔW's eigenvalues for SymLoRA
    blocks (signed), ΔW's singular values for LoRA layers (one row)."""
    out: dict[str, Tensor] = {}
    for name, layer in adapter_layers(model):
        if isinstance(layer, SymLoraLayer):
            out[name] = symlora_eigenvalues(layer).cpu()
        elif isinstance(layer, LoraLayer):
            out[name] = lora_singular_values(layer).cpu()
    return out


def symmetric_fraction(delta_w: Tensor) -> float:
    """‖sym(ΔW)‖² / ‖ΔW‖² for a square update: 1 for symmetric, 0 for antisymmetric,
    ≈ 0.5 for a random matrix.  How much of a LoRA update SymLoRA could express."""
    if delta_w.ndim != 2 or delta_w.shape[0] != delta_w.shape[1]:
        raise ValueError(f"symmetric_fraction needs a square matrix, got shape {tuple(delta_w.shape)}")
    d = delta_w.double()
    total = d.square().sum()
    if total == 0:
        return float("nan")
    sym = (d + d.T) / 2
    return float(sym.square().sum() / total)
