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

from .config import AdapterConfig
from .events import RunResult
from .io import CONFIG_NAME, PREFIX, WEIGHTS_NAME, load_adapter
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


def load_run(directory: str | Path, base: VisionModel | TextModel | None = None) -> VisionModel | TextModel:
    """The tuned model of a saved run, ready for predictions (eval mode, CPU)."""
    directory = Path(directory)
    info = read_run(directory)
    config = info["config"]
    bundle = base if base is not None else load_model(config["model"])
    if isinstance(bundle, VisionModel) and info.get("classes"):
        bundle.reset_head(info["classes"], seed=config.get("seed", 0))
    if info.get("adapter_config") is not None:
        load_adapter(bundle.model, directory)
    else:
        state = load_file(str(directory / STATE_FILE))
        params = dict(bundle.model.named_parameters())
        with torch.no_grad():
            for key, value in state.items():
                params[key.removeprefix(PREFIX)].copy_(value)
    bundle.model.eval()
    return bundle


def adapter_config_of(directory: str | Path) -> AdapterConfig:
    return AdapterConfig.load(Path(directory) / CONFIG_NAME)
