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


TIMING_REPEATS = 9  # timed forward passes per model (median), after one warm-up each


def interleaved_medians(fns: dict[str, Any], repeats: int = TIMING_REPEATS) -> dict[str, tuple[float, float]]:
    """``{name: (median ms, spread ms)}`` of each function: one warm-up call each, then
    ``repeats`` rounds that call every function once in turn (so a busy moment hits all
    of them alike).  The spread is half the interquartile range."""
    import statistics

    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(1000 * (time.perf_counter() - t0))
    out = {}
    for name, values in times.items():
        q = statistics.quantiles(values, n=4) if len(values) >= 2 else [values[0]] * 3
        out[name] = (statistics.median(values), (q[2] - q[0]) / 2)
    return out


def timing_sentence(base: tuple[float, float], merged: tuple[float, float], repeats: int = TIMING_REPEATS) -> str:
    """What the merged-vs-base timings say, following the numbers: "costs the same" only
    when the medians are within 20 % of each other or within twice their own spread."""
    (b, b_spread), (m, m_spread) = base, merged
    ratio = m / b if b > 0 else float("inf")
    noise = max(b_spread, m_spread)
    how = f"medians of {repeats} interleaved runs after a warm-up"
    if abs(m - b) <= max(0.2 * b, 2 * noise):
        return (f"Merged, the tuned model has exactly the base model's shapes, and it costs the same here: "
                f"{m:.1f} vs {b:.1f} ms ({ratio:.2f}×; {how}).")
    return (f"Merged, the tuned model has exactly the base model's shapes, so it should cost the same — but it "
            f"measured **{ratio:.2f}×** the base here ({m:.1f} vs {b:.1f} ms, {how}; single runs vary by "
            f"±{noise:.1f} ms). On a shared or busy machine other work lands on some runs and not on others: "
            f"press **Check merge** again to measure anew.")


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
    # Each timing is interleaved with the base's (one copy of the model: merged in place between).
    t_adapter = interleaved_medians({"base": lambda: call(base_model, base_device),
                                     "adapter": lambda: call(model, device)})["adapter"][0]
    n_adapters = sum(1 for _ in symlora.adapter_layers(model))
    symlora.merge(model)
    merged = call(model, device)
    times = interleaved_medians({"base": lambda: call(base_model, base_device),
                                 "merged": lambda: call(model, device)})
    t_base, t_merged = times["base"][0], times["merged"][0]
    diff = float((merged - unmerged).abs().max())
    scale = float(unmerged.abs().max()) or 1.0
    ok = "✓" if diff <= 1e-3 * scale + 1e-5 else "⚠"
    return (
        f"{ok} **Merge check** on {n_adapters} adapted layers: max |merged − unmerged| output difference = "
        f"**{diff:.2e}** (outputs are up to {scale:.2f}).\n\n"
        f"| model | forward pass |\n|---|---:|\n"
        f"| base (pretrained) | {t_base:.1f} ms |\n"
        f"| tuned, adapters beside the weights | {t_adapter:.1f} ms |\n"
        f"| tuned, merged (W + ΔW) | {t_merged:.1f} ms |\n\n"
        + timing_sentence(times["base"], times["merged"])
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
