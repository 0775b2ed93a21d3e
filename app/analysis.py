"""Looking at a tuned model: how symmetric its update is, the merge check, downloads.

All functions take a tuned bundle (from :class:`app.sessions.TunedModels`) and leave it
as they found it: the merge check works on a copy.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import torch

import symlora
from symlora.layers import SymLoraLayer, symmetric_blocks


def symmetric_share(model: torch.nn.Module) -> tuple[float, int] | None:
    """Energy-weighted mean symmetric fraction of every adapter's ΔW (split into its square
    blocks), and the number of blocks; ``None`` without adapters or with a zero update."""
    total, weighted, count = 0.0, 0.0, 0
    for _, layer in symlora.adapter_layers(model):
        with torch.no_grad():
            dw = layer.delta_weight().detach().float().cpu()  # (out, in)
        blocks = symmetric_blocks(layer.in_features, layer.out_features)
        if blocks is None:
            continue
        layout, k, n = blocks
        parts = [dw] if layout == "square" else (dw.split(n, dim=0) if layout == "stacked" else dw.split(n, dim=1))
        for part in parts:
            energy = float(part.double().square().sum())
            if energy == 0:
                continue
            weighted += energy * symlora.symmetric_fraction(part)
            total += energy
            count += 1
    return (weighted / total, count) if total else None


def symmetry_note(bundle: Any, method: str, share: tuple[float, int] | None = None) -> str:
    """A sentence on how symmetric the learned update is (``share``: what
    :func:`symmetric_share` gave, when the model itself is not at hand)."""
    if method == "symlora":
        return ("**SymLoRA:** every ΔW block is symmetric by construction (symmetric fraction 1.00): "
                "the bars are *signed* eigenvalues — positive stretches a direction, negative shrinks/flips it.")
    if method != "lora" or (bundle is None and share is None):
        return ""
    if share is None:
        share = symmetric_share(bundle.model)
    if share is None:
        return ""
    value, blocks = share
    return (f"**LoRA:** the bars are singular values (always ≥ 0). The symmetric part holds **{value:.0%}** of "
            f"the energy of LoRA's ΔW (over {blocks} square blocks; a random matrix gives about 50 %). "
            f"SymLoRA can only learn that symmetric part — with about half the weights.")


def _timed(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return 1000 * (time.perf_counter() - t0) / repeats


@torch.no_grad()
def merge_check(tuned: Any, base: Any, inputs: Any) -> str:
    """Markdown: merged outputs equal unmerged ones, and merged inference costs what the
    base costs.  ``inputs`` is a tensor batch (vision) or a dict of tensors (text)."""
    if not any(True for _ in symlora.adapter_layers(tuned.model)):
        return "This run has no adapters (head-only or full fine-tuning): there is nothing to merge."
    model = copy.deepcopy(tuned.model).eval()
    device = next(model.parameters()).device
    base_model = base.model
    base_device = next(base_model.parameters()).device

    def call(m, dev):
        x = {k: v.to(dev) for k, v in inputs.items()} if isinstance(inputs, dict) else inputs.to(dev)
        out = m(**x) if isinstance(x, dict) else m(x)
        return (out.logits if hasattr(out, "logits") else out).float().cpu()

    unmerged = call(model, device)
    t_adapter = _timed(lambda: call(model, device))
    symlora.merge(model)
    merged = call(model, device)
    t_merged = _timed(lambda: call(model, device))
    t_base = _timed(lambda: call(base_model, base_device))
    diff = float((merged - unmerged).abs().max())
    scale = float(unmerged.abs().max()) or 1.0
    ok = "✓" if diff <= 1e-3 * scale + 1e-5 else "⚠"
    n_adapters = sum(1 for _ in symlora.adapter_layers(model))
    return (
        f"{ok} **Merge check** on {n_adapters} adapted layers: max |merged − unmerged| output difference = "
        f"**{diff:.2e}** (outputs are up to {scale:.2f}).\n\n"
        f"| model | forward pass |\n|---|---:|\n"
        f"| base (pretrained) | {t_base:.1f} ms |\n"
        f"| tuned, adapters beside the weights | {t_adapter:.1f} ms |\n"
        f"| tuned, merged (W + ΔW) | {t_merged:.1f} ms |\n\n"
        f"Merged, the tuned model has exactly the base model's shapes, so it costs the same "
        f"(timings on this machine vary by a few %)."
    )


def _zip_dir(directory: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(directory))
    return target


DOWNLOADS_TTL_S = 3600


def _downloads_dir() -> Path:
    """A folder for download zips; zips older than an hour are deleted on each use."""
    root = Path(tempfile.gettempdir()) / "symlora-lab-downloads"
    root.mkdir(exist_ok=True)
    cutoff = time.time() - DOWNLOADS_TTL_S
    for old in root.iterdir():
        try:
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    return root


def adapter_downloads(tuned: Any, name: str, facts: dict[str, Any] | None = None) -> tuple[str, str]:
    """Zip files of the adapter in symlora format and as a plain PEFT LoRA export, each
    with a model card ``README.md`` (``facts``: the run's data and metrics for it)."""
    from symlora.io import export_bundle

    if not any(True for _ in symlora.adapter_layers(tuned.model)):
        raise ValueError("this run has no adapters (head-only or full fine-tuning): nothing to download")
    out = Path(tempfile.mkdtemp(prefix="symlora-lab-"))
    try:
        own = export_bundle(tuned, out / "adapter", fmt="symlora", facts=facts)
        peft = export_bundle(tuned, out / "peft", fmt="peft", facts=facts)
        zips = Path(tempfile.mkdtemp(prefix="zip-", dir=_downloads_dir()))
        a = _zip_dir(own, zips / f"{name}-symlora-adapter.zip")
        b = _zip_dir(peft, zips / f"{name}-peft-lora.zip")
        return str(a), str(b)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def is_symlora(model: torch.nn.Module) -> bool:
    return any(isinstance(layer, SymLoraLayer) for _, layer in symlora.adapter_layers(model))
