"""The heavy call — one training run — shaped for Hugging Face's ZeroGPU.

On a ZeroGPU Space, ``@spaces.GPU(duration=...)`` runs a function in a *forked worker
process* that holds a GPU for at most ``duration`` seconds: its arguments and results are
pickled across the process boundary, generators stream item by item, and the GPU is
released when the function returns.  :func:`train_stream` is written for that contract:

* it is a module-level function (``spaces`` registers it at import time);
* it takes plain, picklable arguments — the run's :class:`~symlora.lab.runconfig.RunConfig`
  as a dict (``RunConfig.to_dict``), the user's own data (if any) as CPU tensors / strings
  (:func:`data_payload`), and the path of the run's control files (Stop / Pause / Step, see
  :class:`app.sessions.RunFlag`: files are what a forked process can still see);
* it yields plain dicts: ``{"event": TrainEvent.to_payload(), "symmetry": ...}`` (numbers,
  lists, CPU tensors; ``TrainEvent.from_payload`` turns them back into engine events) —
  never a live ``nn.Module``;
* the pretrained model comes from the process-wide cache :data:`app.sessions.BASES`
  (a forked worker inherits what the app has loaded).

Where ``spaces`` is not installed (everywhere but a Space), :func:`gpu` is an identity
decorator.  Outside ZeroGPU the app does not call :func:`train_stream`: its runs go through
the process's training engine (:func:`app.sessions.engine_for`, see :func:`app.runner.stream`),
where runs share steps and identical runs are computed once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import torch

from .sessions import BASES, control_check

try:  # only on Hugging Face Spaces; never a dependency of this project
    import spaces as _spaces  # type: ignore[import-not-found]
except ImportError:
    _spaces = None

ZERO_GPU = _spaces is not None and (
    bool(getattr(getattr(getattr(_spaces, "config", None), "Config", None), "zero_gpu", False))
    or bool(os.environ.get("SPACES_ZERO_GPU")))
MAX_GPU_S = 300  # ZeroGPU's daily quota is in minutes: one run never asks for more than this


def gpu(fn: Any = None, **options: Any) -> Any:
    """``spaces.GPU`` when the ``spaces`` package is importable, else an identity decorator.
    Works bare (``@gpu``) and with options (``@gpu(duration=60)``)."""
    if _spaces is not None:
        return _spaces.GPU(fn, **options) if fn is not None else _spaces.GPU(**options)
    if fn is not None:
        return fn
    return lambda f: f


def gpu_seconds(config: dict[str, Any], data: dict[str, Any] | None = None, control: str | None = None) -> int:
    """How long :func:`train_stream` may hold a GPU (ZeroGPU's dynamic ``duration``):
    loading and evaluation, plus a generous allowance per step."""
    steps = int(config.get("steps") or 100)
    return int(min(MAX_GPU_S, 30 + math.ceil(0.5 * steps)))


# --------------------------------------------------------------------------- payloads
def data_payload(splits: Any) -> dict[str, Any]:
    """An ``ImageSplits`` / ``TextSplits`` as a plain dict of CPU tensors and strings."""
    from symlora.lab.data import ImageSplits

    if isinstance(splits, ImageSplits):
        return {"kind": "images", "name": splits.name, "credit": splits.credit, "classes": list(splits.classes),
                "train_images": splits.train.images.cpu(), "train_labels": splits.train.labels.cpu(),
                "test_images": splits.test.images.cpu(), "test_labels": splits.test.labels.cpu()}
    return {"kind": "text", "name": splits.name, "credit": splits.credit, "train": list(splits.train),
            "test": list(splits.test)}


def splits_from_payload(data: dict[str, Any]) -> Any:
    """The inverse of :func:`data_payload`."""
    from symlora.lab.data import ImageDataset, ImageSplits, TextSplits

    if data["kind"] == "images":
        classes = list(data["classes"])
        return ImageSplits(data["name"], ImageDataset(data["train_images"], data["train_labels"], classes),
                           ImageDataset(data["test_images"], data["test_labels"], list(classes)), data["credit"])
    return TextSplits(data["name"], list(data["train"]), list(data["test"]), data["credit"])


# --------------------------------------------------------------------------- the GPU function
@gpu(duration=gpu_seconds)
def train_stream(config: dict[str, Any], data: dict[str, Any] | None = None, control: str | None = None
                 ) -> Iterator[dict[str, Any]]:
    """Train one run and stream its events as plain dicts (see the module docstring).

    Args:
        config: ``RunConfig.to_dict()`` of the run.
        data: the user's data from :func:`data_payload`, or None for the config's dataset.
        control: a :class:`~app.sessions.RunFlag` path: Stop, Pause and Step are read
            from its files before every step.

    Yields ``{"event": ..., "symmetry": ...}``: the event's payload, and with the final
    one a LoRA run's symmetric share (measured here, where the tuned model is).
    """
    from symlora.lab.runconfig import RunConfig
    from symlora.lab.train import run

    from .analysis import symmetric_share

    cfg = RunConfig.from_dict(config)
    base = BASES.model(cfg.model)
    dataset = splits_from_payload(data) if data is not None else BASES.dataset(cfg.data, cfg.seed)
    for event in run(cfg, base=base, dataset=dataset, stop=control_check(control), keep_model=cfg.method == "lora"):
        symmetry = None
        if event.result is not None and event.result.bundle is not None:
            if cfg.method == "lora":
                symmetry = symmetric_share(event.result.bundle.model)
            event.result.bundle = None  # the model stays in this process
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        yield {"event": event.to_payload(), "symmetry": symmetry}
