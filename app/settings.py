"""The values of the Train controls as one object, and how they become an engine run.

Every tab, the share link and the API speak :class:`Settings`; only
:meth:`Settings.to_run_config` knows the engine's :class:`~symlora.lab.train.RunConfig`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

METHOD_CHOICES: list[tuple[str, str]] = [
    ("SymLoRA", "symlora"),
    ("LoRA", "lora"),
    ("Head only", "head-only"),
    ("Full fine-tune", "full"),
]
METHOD_LABELS: dict[str, str] = {value: label for label, value in METHOD_CHOICES}
ADAPTER_METHODS = ("symlora", "lora")

# Bounds the UI (and a share link) may ask for; the engine validates again.
LIMITS: dict[str, tuple[float, float]] = {
    "r": (1, 64),
    "lora_alpha": (0.5, 256),
    "lr": (1e-6, 1.0),
    "steps": (1, 1000),
    "batch_size": (1, 512),
    "seed": (0, 2**32 - 1),
}
_WHOLE = {"r", "steps", "batch_size", "seed", "max_tokens", "gen_seed"}  # integers: 3.7 is refused, not truncated


def check_value(name: str, value: Any, limits: dict[str, tuple[float, float]] | None = None) -> Any:
    """``value`` checked against ``limits[name]`` (default :data:`LIMITS`) by the core's own
    checks (what the CLI uses): a one-line ``ValueError`` naming the setting and its range."""
    from symlora.config import check_int, check_number

    low, high = (limits or LIMITS)[name]
    if name in _WHOLE:
        return check_int(name, value, int(low), int(high))
    return check_number(name, value, low, high)


@dataclass
class Settings:
    """One training setup, exactly as the Train tab shows it."""

    preset: str = "digits"
    model: str = ""
    data: str = ""
    method: str = "symlora"
    r: int = 8
    lora_alpha: float = 16.0
    targets: list[str] = field(default_factory=list)  # layer-name suffixes; [] = the model's default
    lr: float = 3e-3
    steps: int = 60
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"

    @classmethod
    def from_preset(cls, preset: Any) -> "Settings":
        """The preset's values (a ``symlora.lab.presets.Preset``); targets as a list when it is one."""
        targets = preset.target_modules if isinstance(preset.target_modules, (list, tuple)) else []
        return cls(
            preset=preset.name, model=preset.model, data=preset.data, method=preset.method,
            r=int(preset.r), lora_alpha=float(preset.lora_alpha), targets=list(targets),
            lr=float(preset.lr), steps=int(preset.steps), batch_size=int(preset.batch_size),
            seed=int(preset.seed),
        )

    @classmethod
    def from_values(cls, *values: Any) -> "Settings":
        """Build from the control values in :data:`FIELDS` order (as a Gradio handler gets them);
        numbers out of :data:`LIMITS` (or not whole where they must be) raise ``ValueError``."""
        s = cls(**dict(zip(FIELDS, values)))
        for name in ("r", "lora_alpha", "lr", "steps", "batch_size", "seed"):  # ValueError: one line, with the range
            setattr(s, name, check_value(name, getattr(s, name)))
        if isinstance(s.targets, str):
            s.targets = [part.strip() for part in s.targets.split(",") if part.strip()]
        s.targets = list(s.targets or [])
        return s

    def values(self) -> list[Any]:
        """Control values in :data:`FIELDS` order."""
        return [getattr(self, name) for name in FIELDS]

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    @property
    def is_adapter(self) -> bool:
        return self.method in ADAPTER_METHODS

    def to_run_config(self, **overrides: Any):
        """The engine's ``RunConfig`` for these settings (fields not shown in the UI keep
        the preset's values, e.g. ``eval_every`` and ``max_tokens``)."""
        from symlora.lab.train import RunConfig

        values = dict(
            preset=self.preset, model=self.model or None, data=self.data or None, method=self.method,
            r=self.r, lora_alpha=self.lora_alpha, target_modules=list(self.targets) or None,
            lr=self.lr, steps=self.steps, batch_size=self.batch_size, seed=self.seed, device=self.device,
        )
        values.update(overrides)
        return RunConfig(**values)


FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Settings))
