"""A run on disk: ``run.json``, ``metrics.jsonl`` and the trained weights.

Adapter runs write the usual ``adapter_config.json`` + ``adapter_model.safetensors``;
head-only and full runs write ``trainable_state.safetensors``.  :func:`load_run`
rebuilds the tuned model from the folder and the (offline) model zoo.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..config import AdapterConfig
from .events import RunResult
from ..io import CONFIG_NAME, PREFIX, WEIGHTS_NAME
from ..model import inject
from .zoo import TextModel, VisionModel, load_model

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
STATE_FILE = "trainable_state.safetensors"


def save_run(result: RunResult, directory: str | Path) -> Path:
    """Write a finished run's summary, history and weights into ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    summary = result.summary() | {"classes": result.classes, "adapter_config": result.adapter_config}
    (out / RUN_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    with open(out / METRICS_FILE, "w") as f:
        for row in result.history:
            f.write(json.dumps({k: v for k, v in row.items() if k != "result"}) + "\n")
    tensors = {k: v.contiguous() for k, v in result.trainable_state.items()}
    if result.adapter_config is not None:
        (out / CONFIG_NAME).write_text(json.dumps(result.adapter_config, indent=2) + "\n")
        save_file(tensors, str(out / WEIGHTS_NAME))
    else:
        save_file(tensors, str(out / STATE_FILE))
    return out


def read_run(directory: str | Path) -> dict[str, Any]:
    """The ``run.json`` of a run folder, with a clear error when it is not one."""
    path = Path(directory) / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a run folder (no {RUN_FILE}); make one with 'symlora train --out DIR'")
    return json.loads(path.read_text())


def restore_tuned(bundle: VisionModel | TextModel, *, state: dict[str, torch.Tensor],
                  adapter_config: dict[str, Any] | None = None, classes: list[str] | None = None,
                  seed: int = 0) -> VisionModel | TextModel:
    """Turn ``bundle`` (a fresh copy of a run's pretrained model; it is changed in place)
    into the run's tuned model: the run's new head, its adapters and its trained tensors
    (keyed with or without PEFT's ``base_model.model.`` prefix).  Eval mode.

    Raises ``ValueError`` when a tensor has no place in the model or the wrong shape, holds
    NaN or inf, or when adapter weights are missing — a run saved from another model, not a silent no-op."""
    if classes and isinstance(bundle, VisionModel):
        bundle.reset_head(list(classes), seed=seed)
    if adapter_config is not None:
        inject(bundle.model, AdapterConfig.from_dict(adapter_config))
    params = dict(bundle.model.named_parameters())
    tensors = {key.removeprefix(PREFIX): value for key, value in state.items()}
    unexpected = sorted(set(tensors) - set(params))
    missing = sorted(name for name, p in params.items() if p.requires_grad and name not in tensors and ".lora_" in name)
    if unexpected or missing:
        raise ValueError(f"the saved weights do not fit the model: unexpected {unexpected[:3]}, missing {missing[:3]}")
    broken = [key for key, value in tensors.items() if value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if broken:
        raise ValueError(f"the saved weights contain NaN or inf ({broken[0]}): the run diverged; "
                         f"train again with a lower learning rate or lora_alpha")
    with torch.no_grad():
        for key, value in tensors.items():
            if params[key].shape != value.shape:
                raise ValueError(f"{key}: shape {tuple(value.shape)} saved, the model has {tuple(params[key].shape)}")
            params[key].copy_(value)
    bundle.model.eval()
    return bundle


def load_run(directory: str | Path, base: VisionModel | TextModel | None = None) -> VisionModel | TextModel:
    """The tuned model of a saved run, ready for predictions (eval mode, CPU).  ``base``
    (a freshly loaded copy of the run's model) is changed in place; without it the model
    is loaded from the zoo."""
    directory = Path(directory)
    info = read_run(directory)
    config = info["config"]
    weights = directory / (WEIGHTS_NAME if info.get("adapter_config") is not None else STATE_FILE)
    if not weights.is_file():
        raise FileNotFoundError(f"{directory}: the run's weights ({weights.name}) are missing")
    bundle = base if base is not None else load_model(config["model"])
    return restore_tuned(bundle, state=load_file(str(weights)), adapter_config=info.get("adapter_config"),
                         classes=info.get("classes"), seed=config.get("seed", 0))

