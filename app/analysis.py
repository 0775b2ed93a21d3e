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
from symlora.layers import SymLoraLayer, symmetric_blocks

log = logging.getLogger(__name__)


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


def adapter_downloads(tuned: Any, name: str, owner: str = "") -> tuple[str, str]:
    """Zip files of the adapter in symlora format and as a plain PEFT LoRA export, named
    for the session ``owner`` and deleted :data:`DOWNLOADS_TTL_S` seconds later."""
    if not any(True for _ in symlora.adapter_layers(tuned.model)):
        raise ValueError("this run has no adapters (head-only or full fine-tuning): nothing to download")
    sweep_downloads()
    _start_sweeper()
    out = Path(tempfile.mkdtemp(prefix="symlora-lab-"))
    try:
        own = symlora.save_adapter(tuned.model, out / "adapter")
        peft = symlora.export_peft(tuned.model, out / "peft")
        zips = Path(tempfile.mkdtemp(prefix="zip-", dir=_downloads_dir()))
        tag = f"{download_tag(owner)}{secrets.token_hex(2)}"
        a = _zip_dir(own, zips / f"{name}-{tag}-symlora-adapter.zip")
        b = _zip_dir(peft, zips / f"{name}-{tag}-peft-lora.zip")
        with _made_lock:
            _made[a.name] = _made[b.name] = time.time()
        return str(a), str(b)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def is_symlora(model: torch.nn.Module) -> bool:
    return any(isinstance(layer, SymLoraLayer) for _, layer in symlora.adapter_layers(model))
