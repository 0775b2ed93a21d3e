"""Saving, loading and exporting adapters in PEFT's file format.

An adapter folder holds ``adapter_config.json`` and ``adapter_model.safetensors`` with
keys ``base_model.model.<module path>.<tensor>`` as PEFT writes them.  Only safetensors
is read: pickled checkpoints (``.bin``, ``.pt``) are refused, never unpickled.

``export_peft`` turns a SymLoRA adapter into a *plain LoRA* adapter that PEFT, diffusers
or vLLM load as-is:  Q·diag(Λ)·Qᵀ = (Q·diag(Λ))·Qᵀ, so A = Qᵀ and B = s·Q·diag(Λ).
A block-symmetric layer of k blocks becomes a rank k·r LoRA whose block-diagonal factor
is B (blocks stacked along the output) or A (blocks side by side along the input).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .blocks import block_diagonal
from .config import AdapterConfig
from .layers import AdapterLayer, LoraLayer, SymLoraLayer
from .model import adapter_layers, get_config, inject, saved_module_names

CARD_NAME = "README.md"
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PREFIX = "base_model.model."
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def adapter_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Adapter tensors and ``modules_to_save`` state, keyed as PEFT keys them."""
    config = get_config(model)
    state: dict[str, Tensor] = {}
    for name, layer in adapter_layers(model):
        for local, p in layer.adapter_parameters().items():
            state[f"{PREFIX}{name}.{local}"] = p.detach()
    for name in saved_module_names(model, config):
        for local, t in model.get_submodule(name).state_dict().items():
            state[f"{PREFIX}{name}.{local}"] = t.detach()
    return state


def _write(directory: str | Path, config: dict[str, Any], tensors: dict[str, Tensor],
           metadata: dict[str, str] | None = None, card: str | None = None) -> Path:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    if card is not None:
        (out / CARD_NAME).write_text(card, encoding="utf-8")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    save_file(tensors, str(out / WEIGHTS_NAME), metadata={"format": "pt", **(metadata or {})})
    return out


def save_adapter(model: nn.Module, directory: str | Path, *, base_model_name_or_path: str | None = None,
                 card: str | None = None) -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` into ``directory``
    (and ``card`` as its ``README.md``, see :func:`symlora.cards.model_card`).
    ``base_model_name_or_path`` names the base model in the config, as PEFT does."""
    config = get_config(model).to_dict() | {"base_model_name_or_path": base_model_name_or_path}
    return _write(directory, config, adapter_state_dict(model), card=card)


def _read_weights(directory: Path) -> dict[str, Tensor]:
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        pickled = [p.name for p in directory.iterdir() if p.suffix in _PICKLE_SUFFIXES] if directory.is_dir() else []
        if pickled:
            raise ValueError(
                f"refusing to load pickled weights {pickled} from {directory}: pickle files can run "
                f"arbitrary code; only {WEIGHTS_NAME} is read"
            )
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {directory}")
    try:
        return load_file(str(weights))
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{weights} is not a valid safetensors file: {err}") from err


def load_adapter(model: nn.Module, directory: str | Path) -> nn.Module:
    """Inject the adapter described in ``directory`` into a fresh base ``model`` and load
    its weights.  Missing or unexpected tensors raise ``ValueError``."""
    directory = Path(directory)
    if directory.is_file():
        if directory.suffix in _PICKLE_SUFFIXES:
            raise ValueError(f"refusing to load pickled weights {directory}: only {WEIGHTS_NAME} is read")
        raise ValueError(f"{directory} is a file: pass the adapter folder holding {CONFIG_NAME} and {WEIGHTS_NAME}")
    tensors = _read_weights(directory)  # first: a pickle is refused even without a config
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {directory}")
    config = AdapterConfig.load(config_path)
    inject(model, config)
    expected = adapter_state_dict(model)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(f"adapter does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    with torch.no_grad():
        for key, target in expected.items():
            if target.shape != tensors[key].shape:
                raise ValueError(f"{key}: shape {tuple(tensors[key].shape)} in file, model has {tuple(target.shape)}")
            target.copy_(tensors[key])
    return model


def lora_factors(layer: AdapterLayer) -> tuple[Tensor, Tensor]:
    """``(A, B)`` with ``B @ A == layer.delta_weight()``: the layer as a plain LoRA with
    scaling 1.  For SymLoRA the rank is k·r: A = Qᵀ and B = s·Q·diag(Λ), each made
    block-diagonal along the side that carries the blocks (B stacked, A side by side)."""
    if isinstance(layer, LoraLayer):
        return layer.lora_A.weight.detach(), layer.lora_B.weight.detach() * layer.scaling
    assert isinstance(layer, SymLoraLayer)
    q = layer.lora_Q.detach()
    q_lam = q * (layer.lora_lambda.detach() * layer.scaling)  # Q·diag(Λ)·s, (n, k·r)
    return block_diagonal(q, layer.k_in).T, block_diagonal(q_lam, layer.k_out)


def export_peft(model: nn.Module, directory: str | Path, *, base_model_name_or_path: str | None = None,
                card: str | None = None) -> Path:
    """Write the adapters as a plain PEFT LoRA adapter (``peft_type: LORA``).

    Each layer gets ``lora_alpha`` equal to its rank, so PEFT's scaling is exactly 1 and
    the factors carry s themselves; ``rank_pattern``/``alpha_pattern`` give block layers
    their rank k·r.  ``PeftModel.from_pretrained(base, directory)`` then reproduces the
    adapted model's outputs.  ``base_model_name_or_path`` goes into the config (PEFT's key;
    :func:`symlora.cards.base_model_id` gives it for a zoo model); ``card`` is written as the
    folder's ``README.md``.
    """
    config = get_config(model)
    tensors: dict[str, Tensor] = {}
    ranks: dict[str, int] = {}
    for name, layer in adapter_layers(model):
        a, b = lora_factors(layer)
        if layer.is_conv:
            a, b = a[:, :, None, None], b[:, :, None, None]
        tensors[f"{PREFIX}{name}.lora_A.weight"] = a
        tensors[f"{PREFIX}{name}.lora_B.weight"] = b
        ranks[name] = a.shape[0]
    saved = saved_module_names(model, config)
    for name in saved:
        for local, t in model.get_submodule(name).state_dict().items():
            tensors[f"{PREFIX}{name}.{local}"] = t
    base_rank = config.r
    peft_config = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": base_model_name_or_path,
        "r": base_rank,
        "lora_alpha": base_rank,
        "target_modules": sorted(ranks),
        "rank_pattern": {n: k for n, k in ranks.items() if k != base_rank},
        "alpha_pattern": {n: k for n, k in ranks.items() if k != base_rank},
        "lora_dropout": 0.0,
        "bias": "none",
        "use_rslora": False,
        "modules_to_save": saved or None,
        "init_lora_weights": True,
        "fan_in_fan_out": False,
        "inference_mode": True,
    }
    # Provenance goes into the safetensors header: an unknown key in adapter_config.json makes
    # PEFT warn its users to upgrade PEFT.
    exported_from = f"symlora ({config.method}, r={config.r}, lora_alpha={config.lora_alpha})"
    return _write(directory, peft_config, tensors, {"exported_from": exported_from}, card=card)


def export_bundle(bundle: object, directory: str | Path, *, fmt: str = "peft",
                  facts: dict[str, Any] | None = None) -> Path:
    """Save the adapter of a tuned zoo ``bundle`` (``VisionModel`` / ``TextModel``) with
    everything that explains it: ``base_model_name_or_path`` and a model card
    ``README.md`` (base model, preprocessing, labels, metrics ``facts``, a loading snippet).
    ``fmt``: ``"peft"`` (plain PEFT LoRA, :func:`export_peft`) or ``"symlora"``
    (:func:`save_adapter`)."""
    from .cards import RunFacts, base_model_id, model_card

    model = bundle.model  # type: ignore[attr-defined]
    adapter = get_config(model).to_dict()
    card = model_card(bundle, adapter, fmt=fmt, facts=RunFacts.from_dict(facts))
    base = base_model_id(getattr(bundle, "name", None) or "base-model")
    if fmt == "peft":
        return export_peft(model, directory, base_model_name_or_path=base, card=card)
    if fmt == "symlora":
        return save_adapter(model, directory, base_model_name_or_path=base, card=card)
    raise ValueError(f"fmt must be 'peft' or 'symlora', got {fmt!r}")
