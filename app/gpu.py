"""The heavy call — one training run — shaped for Hugging Face's ZeroGPU.

On a ZeroGPU Space, ``@spaces.GPU(duration=...)`` runs a function in a *forked worker
process* that holds a GPU for at most ``duration`` seconds: its arguments and results are
pickled across the process boundary, generators stream item by item, and the GPU is
released when the function returns.  :func:`train_stream` is written for that contract:

* it is a module-level function (``spaces`` registers it at import time);
* it takes plain, picklable arguments — the run's :class:`~symlora.lab.train.RunConfig` as a
  dict, the user's own data (if any) as CPU tensors / strings (:func:`data_payload`), and
  the path of the run's control files (Stop / Pause / Step, see
  :class:`app.sessions.RunFlag`: files are what a forked process can still see);
* it yields plain dicts (numbers, lists, CPU tensors; :func:`event_from_payload` turns
  them back into engine events) — never a live ``nn.Module``, unless the caller asks
  for one with ``keep_model`` (only in-process, to try the model without rebuilding it);
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


def gpu_seconds(config: dict[str, Any], data: dict[str, Any] | None = None, control: str | None = None,
                keep_model: bool = False) -> int:
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


def event_payload(event: Any) -> dict[str, Any]:
    """A :class:`~symlora.lab.events.TrainEvent` as a plain dict; the final one carries the
    result's summary, its trained weights (CPU tensors), adapter config and classes."""
    payload = event.to_dict()
    result = event.result
    if result is not None:
        payload["result"] = result.summary() | {
            "trainable_state": {k: v.detach().to("cpu") for k, v in (result.trainable_state or {}).items()},
            "adapter_config": result.adapter_config, "classes": result.classes,
        }
    return payload


def event_from_payload(payload: dict[str, Any]) -> Any:
    """Rebuild the engine's ``TrainEvent`` (and ``RunResult``) from :func:`event_payload`."""
    from symlora.lab.events import MemoryBreakdown, RunResult, TrainEvent

    def memory(d: dict[str, int] | None) -> MemoryBreakdown:
        return MemoryBreakdown(**{k: v for k, v in (d or {}).items() if k != "total"})

    fields = {k: v for k, v in payload.items() if k not in ("memory", "result", "symmetry", "bundle")}
    event = TrainEvent(**fields, memory=memory(payload.get("memory")))
    raw = payload.get("result")
    if raw is not None:
        event.result = RunResult(
            config=raw["config"], method=raw["method"], metric_name=raw["metric_name"],
            metric_before=raw["metric_before"], metric_after=raw["metric_after"],
            trainable_params=raw["trainable_params"], total_params=raw["total_params"],
            steps_done=raw["steps_done"], wall_s=raw["wall_s"], step_ms=raw["step_ms"],
            peak_mem_bytes=raw["peak_mem_bytes"], memory=memory(raw["memory"]), history=[],
            status=raw["status"], message=raw["message"], trainable_state=raw.get("trainable_state") or {},
            adapter_config=raw.get("adapter_config"), classes=raw.get("classes"),
        )
        event.result.symmetry = payload.get("symmetry")  # type: ignore[attr-defined]
        event.result.bundle = payload.get("bundle")  # type: ignore[attr-defined]
    return event


# --------------------------------------------------------------------------- the GPU function
@gpu(duration=gpu_seconds)
def train_stream(config: dict[str, Any], data: dict[str, Any] | None = None, control: str | None = None,
                 keep_model: bool = False) -> Iterator[dict[str, Any]]:
    """Train one run and stream its events as plain dicts (see the module docstring).

    Args:
        config: ``RunConfig`` fields (``RunConfig(**config)``); ``None`` ones come from the preset.
        data: the user's data from :func:`data_payload`, or None for the config's dataset.
        control: a :class:`~app.sessions.RunFlag` path: Stop, Pause and Step are read
            from its files before every step.
        keep_model: put the trained bundle on the final payload as ``"bundle"`` — only
            where no process boundary is crossed (it may live on the GPU).
    """
    from symlora.lab.train import RunConfig, run

    from .analysis import symmetric_share

    cfg = RunConfig(**config).resolved()
    base = BASES.model(cfg.model)
    dataset = splits_from_payload(data) if data is not None else BASES.dataset(cfg.data, cfg.seed)
    for event in run(cfg, base=base, dataset=dataset, stop=control_check(control), keep_model=True):
        payload = event_payload(event)
        bundle = getattr(event.result, "bundle", None) if event.result is not None else None
        if bundle is not None:
            event.result.bundle = None
            payload["symmetry"] = symmetric_share(bundle.model) if cfg.method == "lora" else None
            if keep_model:
                payload["bundle"] = bundle
            del bundle
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        yield payload
