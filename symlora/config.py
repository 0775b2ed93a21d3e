"""Adapter configuration: what to adapt, how, and at which rank.

The field names follow PEFT's ``LoraConfig`` so that PEFT users feel at home:
``r``, ``lora_alpha``, ``target_modules``, ``lora_dropout``, ``use_rslora``,
``modules_to_save``.  ``method`` chooses between classic LoRA (ΔW = B·A) and
SymLoRA (ΔW = Q·diag(Λ)·Qᵀ).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Method = Literal["symlora", "lora"]
METHODS: tuple[str, ...] = ("symlora", "lora")
SYMLORA_INITS: tuple[str, ...] = ("gaussian", "orthogonal")


@dataclass
class AdapterConfig:
    """How to put low-rank adapters on a model.

    Attributes:
        method: ``"symlora"`` (ΔW = s·Q·diag(Λ)·Qᵀ, about half of LoRA's weights) or
            ``"lora"`` (ΔW = s·B·A).
        r: rank of every adapter (per square block for SymLoRA).
        lora_alpha: scaling numerator; the update is multiplied by ``lora_alpha / r``
            (or ``lora_alpha / sqrt(r)`` with ``use_rslora``).
        target_modules: which layers to adapt: a list of module-name suffixes
            (``["qkv", "proj"]``), a regex string matched against the full module name
            (PEFT semantics), or ``"all-linear"``.
        lora_dropout: dropout on the adapter's input only (the base path is untouched).
        use_rslora: rank-stabilised scaling ``lora_alpha / sqrt(r)``.
        modules_to_save: modules trained fully and saved with the adapter (a new head).
        symlora_init: how Q starts (Λ always starts at zero, so ΔW = 0 at step 0):
            ``"gaussian"`` draws Q ~ N(0, init_scale²/n), ``"orthogonal"`` draws
            orthonormal columns scaled by ``init_scale``.
        init_scale: column norm of Q at init (1.0 = unit-norm columns).
        lambda_lr_ratio: learning-rate multiplier for Λ used by
            :func:`symlora.optim.param_groups`; ``None`` (default) means √n per layer,
            which removes SymLoRA's slow start (the adapter itself ignores it).
    """

    method: Method = "symlora"
    r: int = 8
    lora_alpha: float = 16.0
    target_modules: list[str] | str | None = None
    lora_dropout: float = 0.0
    use_rslora: bool = False
    modules_to_save: list[str] | None = None
    symlora_init: str = "gaussian"
    init_scale: float = 1.0
    lambda_lr_ratio: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"r must be a positive integer, got {self.r!r}")
        if not self.lora_alpha > 0:
            raise ValueError(f"lora_alpha must be positive, got {self.lora_alpha!r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if self.symlora_init not in SYMLORA_INITS:
            raise ValueError(f"symlora_init must be one of {SYMLORA_INITS}, got {self.symlora_init!r}")
        if isinstance(self.target_modules, tuple):
            self.target_modules = list(self.target_modules)
        if isinstance(self.modules_to_save, tuple):
            self.modules_to_save = list(self.modules_to_save)

    @property
    def scaling(self) -> float:
        """The factor s that multiplies every ΔW."""
        return self.lora_alpha / (math.sqrt(self.r) if self.use_rslora else self.r)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``peft_type`` tells PEFT-aware tools what this is."""
        d = dataclasses.asdict(self)
        d["peft_type"] = "SYMLORA" if self.method == "symlora" else "LORA"
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AdapterConfig":
        """Build a config from :meth:`to_dict` output, ignoring unknown keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        if "method" not in kwargs:  # a plain PEFT LoRA adapter_config.json
            if d.get("peft_type", "LORA") != "LORA":
                raise ValueError(f"unsupported peft_type {d.get('peft_type')!r}: only LORA adapters load")
            kwargs["method"] = "lora"
        return cls(**kwargs)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "AdapterConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))
