"""Putting adapters on a model: target matching, injection, merge and parameter counts.

``inject`` works in place on any ``nn.Module`` (timm, transformers, your own): it swaps
each targeted layer for an :class:`~symlora.layers.AdapterLayer` that wraps it, freezes
everything else, and leaves ``modules_to_save`` trainable.  The config is kept on the
model as ``model.symlora_config`` so that saving needs nothing else.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from torch import nn

from .blocks import BlockLayout
from .config import AdapterConfig
from .layers import ADAPTERS, AdapterLayer, layer_shape

log = logging.getLogger(__name__)

CONFIG_ATTR = "symlora_config"
# Output layers that "all-linear" leaves alone, as PEFT does.
_OUTPUT_LAYER_NAMES = ("lm_head", "head", "classifier", "score")


def adapter_layers(model: nn.Module) -> Iterator[tuple[str, AdapterLayer]]:
    """Every adapter layer in ``model`` with its module path."""
    for name, module in model.named_modules():
        if isinstance(module, AdapterLayer):
            yield name, module


def _is_inside_adapter(name: str, adapter_names: set[str]) -> bool:
    return any(name.startswith(a + ".") for a in adapter_names)


def _fits(method: str, shape: tuple[int, int] | None) -> bool:
    return shape is not None and (method == "lora" or BlockLayout(*shape).symmetric)


def _output_layer_names(model: nn.Module) -> set[str]:
    names = set(_OUTPUT_LAYER_NAMES)
    get_out = getattr(model, "get_output_embeddings", None)
    if callable(get_out):
        out = get_out()
        names |= {n for n, m in model.named_modules() if out is not None and m is out}
    return names


def eligible_modules(model: nn.Module, method: str = "symlora") -> list[str]:
    """Module paths that ``method`` can adapt: every Linear / 1×1 conv for LoRA; for
    SymLoRA only square layers and layers whose sides are whole multiples."""
    adapters = {n for n, _ in adapter_layers(model)}
    out = []
    for name, module in model.named_modules():
        if not name or name in adapters or _is_inside_adapter(name, adapters):
            continue
        shape = layer_shape(module)
        if shape is not None and _fits(method, shape):
            out.append(name)
    return out


def layer_kind(name: str) -> str:
    """A module path without its block index: ``blocks.3.attn.qkv`` → ``attn.qkv``
    (what ``target_modules`` usually names)."""
    parts = name.split(".")
    last_index = max((i for i, p in enumerate(parts) if p.isdigit()), default=-1)
    return ".".join(parts[last_index + 1:]) or name


def candidates_hint(eligible: list[str], wanted: list[str] | str | None, method: str, shown: int = 8) -> str:
    """One line naming at most ``shown`` layer kinds ``method`` can adapt, the closest to
    ``wanted`` first, and how many more there are (a model has dozens of layer paths)."""
    kinds = list(dict.fromkeys(layer_kind(n) for n in eligible))
    if not kinds:
        return f"No layer of this model fits {method}."
    words = [str(w) for w in ([wanted] if isinstance(wanted, str) else list(wanted or []))]

    def closeness(kind: str) -> float:  # the whole kind or its last part, whichever is closer
        return max((difflib.SequenceMatcher(None, w, k).ratio() for w in words for k in (kind, kind.split(".")[-1])),
                   default=0.0)

    ordered = sorted(kinds, key=closeness, reverse=True) if words else kinds
    more = len(ordered) - shown
    listed = ", ".join(ordered[:shown]) + (f", … and {more} more" if more > 0 else "")
    return f"Layers {method} can adapt (name a kind, e.g. {ordered[0]!r}): {listed}."


def matches(name: str, patterns: list[str] | str) -> bool:
    """PEFT's rule: a string is a regex matched against the whole name; a list holds
    names that must equal the module path or end it after a dot."""
    if isinstance(patterns, str):
        return re.fullmatch(patterns, name) is not None
    return any(name == p or name.endswith("." + p) for p in patterns)


def resolve_targets(model: nn.Module, config: AdapterConfig) -> list[str]:
    """The module paths ``config`` selects, checked: no match or a wrong shape raises."""
    spec = config.target_modules
    if spec is None:
        raise ValueError("target_modules is required: a list of names, a regex, or 'all-linear'")
    candidates = eligible_modules(model, "lora")  # every adaptable layer, any shape
    if spec == "all-linear":
        skip = _output_layer_names(model) | set(config.modules_to_save or [])
        chosen = [n for n in candidates if n.split(".")[-1] not in skip and n not in skip]
        fitting = [n for n in chosen if _fits(config.method, layer_shape(model.get_submodule(n)))]
        if len(fitting) < len(chosen):
            log.info("all-linear: %d layers skipped, their shapes have no square blocks", len(chosen) - len(fitting))
        chosen = fitting
    else:
        chosen = [n for n in candidates if matches(n, spec)]
    if not chosen:
        raise ValueError(f"Target modules {spec!r} not found in the model. "
                         f"{candidates_hint(eligible_modules(model, config.method), spec, config.method)}")
    for name in chosen:
        shape = layer_shape(model.get_submodule(name))
        if shape is not None and not _fits(config.method, shape):
            raise ValueError(
                f"layer {name!r} has shape in={shape[0]}, out={shape[1]}: SymLoRA needs a square "
                f"layer or sides that are whole multiples of each other (use method='lora' for it)"
            )
    return chosen


def inject(model: nn.Module, config: AdapterConfig) -> nn.Module:
    """Wrap the targeted layers with adapters, in place, and freeze the rest.

    Returns the same ``model`` for chaining.  Raises ``ValueError`` listing the eligible
    module names when nothing matches, or naming the layer whose shape does not fit.
    """
    if hasattr(model, CONFIG_ATTR):
        raise ValueError("model already has adapters; inject into a fresh base model")
    targets = resolve_targets(model, config)
    saved_module_names(model, config)  # a wrong name must fail before the model is changed
    for p in model.parameters():
        p.requires_grad_(False)
    adapter_cls = ADAPTERS[config.method]
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, adapter_cls(getattr(parent, child), config))
    for name in saved_module_names(model, config):
        for p in model.get_submodule(name).parameters():
            p.requires_grad_(True)
    setattr(model, CONFIG_ATTR, config)
    log.info("injected %s r=%d into %d layers", config.method, config.r, len(targets))
    return model


def saved_module_names(model: nn.Module, config: AdapterConfig) -> list[str]:
    """Paths of the ``modules_to_save`` (fully trained, saved with the adapter)."""
    if not config.modules_to_save:
        return []
    names = [n for n, _ in model.named_modules() if n and matches(n, config.modules_to_save)]
    if not names:
        raise ValueError(f"modules_to_save {config.modules_to_save!r} not found in the model")
    return names


def get_config(model: nn.Module) -> AdapterConfig:
    """The config a model was injected with."""
    config = getattr(model, CONFIG_ATTR, None)
    if config is None:
        raise ValueError("model has no adapters: call symlora.inject(model, config) first")
    return config


def merge(model: nn.Module) -> nn.Module:
    """Fold every ΔW into its base weight: inference then costs what the base model costs."""
    for _, layer in adapter_layers(model):
        layer.merge()
    return model


def unmerge(model: nn.Module) -> nn.Module:
    """Undo :func:`merge`, restoring the base weights (to float rounding)."""
    for _, layer in adapter_layers(model):
        layer.unmerge()
    return model


@contextlib.contextmanager
def disable_adapters(model: nn.Module) -> Iterator[nn.Module]:
    """Run the base model inside the block (merged adapters are unmerged meanwhile).

    ``modules_to_save`` (e.g. a new head) stay as trained: they are part of the model.
    """
    layers = [layer for _, layer in adapter_layers(model)]
    was_merged = [layer.merged for layer in layers]
    for layer in layers:
        layer.unmerge()
        layer.disabled = True
    try:
        yield model
    finally:
        for layer, m in zip(layers, was_merged):
            layer.disabled = False
            if m:
                layer.merge()


@dataclass
class ModuleParams:
    """One row of a parameter count: a module path and its weights."""

    name: str
    kind: str  # "symlora", "lora", "saved" (modules_to_save) or "frozen"
    shape: tuple[int, int] | None
    trainable: int
    frozen: int


@dataclass
class ParameterCount:
    """Trainable vs total parameters, with a row per adapter / saved module."""

    trainable: int
    total: int
    rows: list[ModuleParams] = field(default_factory=list)

    @property
    def trainable_percent(self) -> float:
        return 100.0 * self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        return (
            f"trainable params: {self.trainable:,} || all params: {self.total:,} "
            f"|| trainable%: {self.trainable_percent:.4f}"
        )


def count_parameters(model: nn.Module) -> ParameterCount:
    """Count trainable and total parameters; rows describe each adapter layer."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    rows = []
    for name, layer in adapter_layers(model):
        n_adapter = sum(p.numel() for p in layer.adapter_parameters().values())
        n_base = sum(p.numel() for p in layer.base_layer.parameters())
        kind = "symlora" if hasattr(layer, "lora_Q") else "lora"
        rows.append(ModuleParams(name, kind, (layer.in_features, layer.out_features), n_adapter, n_base))
    config = getattr(model, CONFIG_ATTR, None)
    if config is not None:
        for name in saved_module_names(model, config):
            n = sum(p.numel() for p in model.get_submodule(name).parameters())
            rows.append(ModuleParams(name, "saved", None, n, 0))
    return ParameterCount(trainable, total, rows)
