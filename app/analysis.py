"""Looking at a tuned model: how symmetric its update is, the merge check, downloads.

All functions take a tuned bundle (from :class:`app.sessions.TunedModels`) and leave it
as they found it: the merge check works on a copy.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import secrets
import shutil
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import torch

import symlora

log = logging.getLogger(__name__)


def symmetric_share(model: torch.nn.Module) -> tuple[float, int] | None:
    """Energy-weighted mean symmetric fraction of every adapter's ΔW (split into its square
    blocks), and the number of blocks; ``None`` without adapters or with a zero update."""
    total, weighted, count = 0.0, 0.0, 0
    for _, layer in symlora.adapter_layers(model):
        if not layer.block_layout.symmetric:
            continue
        with torch.no_grad():
            dw = layer.delta_weight().detach().float().cpu()  # (out, in)
        for part in layer.block_layout.split(dw):
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


DOWNLOADS_TTL_S = 600  # a download zip (ours and Gradio's served copy) is deleted after 10 minutes
SWEEP_EVERY_S = 60
_SECRET = secrets.token_hex(16)  # per process: file names cannot be derived from a session id
_made: dict[str, float] = {}  # zip file name -> when it was made (to find Gradio's served copies)
_made_lock = threading.Lock()
_sweeper: threading.Thread | None = None


def _downloads_dir() -> Path:
    root = Path(tempfile.gettempdir()) / "symlora-lab-downloads"
    root.mkdir(exist_ok=True)
    return root


def sweep_downloads(now: float | None = None, cache_dir: str | Path | None = None) -> int:
    """Delete download zips older than :data:`DOWNLOADS_TTL_S`: our own folders and the
    copies Gradio serves from its cache (found by their unique names).  Returns how many
    files went."""
    now = time.time() if now is None else now
    cutoff = now - DOWNLOADS_TTL_S
    removed = 0
    for old in _downloads_dir().iterdir():
        try:
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
                removed += 1
        except OSError:
            pass
    with _made_lock:
        expired = {name for name, made in _made.items() if made < cutoff}
        for name in expired:
            del _made[name]
    if expired:
        if cache_dir is None:
            from gradio.utils import get_upload_folder

            cache_dir = get_upload_folder()
        for path in Path(cache_dir).glob("*/*.zip"):
            if path.name in expired:
                try:
                    path.unlink()
                    path.parent.rmdir()  # Gradio keeps one file per folder
                except OSError:
                    pass
                removed += 1
    return removed


def _sweep_forever() -> None:
    while True:
        time.sleep(SWEEP_EVERY_S)
        try:
            sweep_downloads()
        except Exception:  # noqa: BLE001 — a failed sweep must not end the sweeper
            log.exception("sweeping old downloads failed")


def _start_sweeper() -> None:
    global _sweeper
    with _made_lock:
        if _sweeper is None:
            _sweeper = threading.Thread(target=_sweep_forever, name="symlora-download-sweeper", daemon=True)
            _sweeper.start()


def download_tag(owner: str) -> str:
    """A short tag for a session's downloads: differs per session and per process, and
    cannot be guessed from the session id (a keyed hash)."""
    return hashlib.sha256(f"{_SECRET}:{owner}".encode()).hexdigest()[:10]


def adapter_downloads(tuned: Any, name: str, owner: str = "",
                      facts: dict[str, Any] | None = None) -> tuple[str, str]:
    """Zip files of the adapter in symlora format and as a plain PEFT LoRA export, each
    with a model card ``README.md`` (``facts``: the run's data and metrics for it), named
    for the session ``owner`` and deleted :data:`DOWNLOADS_TTL_S` seconds later."""
    from symlora.io import export_bundle

    if not any(True for _ in symlora.adapter_layers(tuned.model)):
        raise ValueError("this run has no adapters (head-only or full fine-tuning): nothing to download")
    sweep_downloads()
    _start_sweeper()
    out = Path(tempfile.mkdtemp(prefix="symlora-lab-"))
    try:
        own = export_bundle(tuned, out / "adapter", fmt="symlora", facts=facts)
        peft = export_bundle(tuned, out / "peft", fmt="peft", facts=facts)
        zips = Path(tempfile.mkdtemp(prefix="zip-", dir=_downloads_dir()))
        tag = f"{download_tag(owner)}{secrets.token_hex(2)}"
        a = _zip_dir(own, zips / f"{name}-{tag}-symlora-adapter.zip")
        b = _zip_dir(peft, zips / f"{name}-{tag}-peft-lora.zip")
        with _made_lock:
            _made[a.name] = _made[b.name] = time.time()
        return str(a), str(b)
    finally:
        shutil.rmtree(out, ignore_errors=True)
