"""One run, declared once: a preset plus overrides, validated once, holding its adapter.

    cfg = RunConfig.from_preset("digits", r=4, lora_dropout=0.1, steps=30)
    cfg.adapter.r, cfg.steps          # 4, 30 — every field set, nothing left to resolve

A :class:`RunConfig` is *resolved*: built from the run defaults (this class's and
:class:`~symlora.config.AdapterConfig`'s), then the preset's values, then the caller's
overrides — each setting named as the class that owns it names it (``r``,
``lora_alpha``, ``lora_dropout``, … go to the adapter; ``lr``, ``steps``, … to the run).
Construction validates every value (a one-line ``ValueError`` naming the setting and its
range); nothing downstream validates or fills in again.  The engine, the CLI, the app's
widgets and share links all speak this one object.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import METHODS as ADAPTER_METHODS
from ..config import AdapterConfig, check_int, check_number

TRAIN_METHODS: tuple[str, ...] = ("symlora", "lora", "head-only", "full")

# What a run may ask for (the app narrows these for a public server: ``limits=``).  Steps and
# batch size are bounded so that one config cannot ask for days of work or a batch no device
# holds.  ``r`` and ``lora_alpha`` are the adapter's own (AdapterConfig checks them: r ≤ R_MAX,
# lora_alpha ≤ MAX_SCALING · r); they are listed only for a narrower table.
LIMITS: dict[str, tuple[float, float]] = {
    "lr": (0, 1e6),  # absurd rates are allowed: they diverge, and the run says so
    "steps": (1, 1_000_000),
    "batch_size": (1, 65_536),
    "seed": (0, 2**32 - 1),
    "eval_every": (1, 2**31 - 1),
    "max_tokens": (1, 131_072),
    "image_size": (8, 4096),
    "eval_size": (1, 10_000_000),
    "weight_decay": (0, 10.0),
    "warmup_frac": (0, 1.0),
    "emit_every": (1, 2**31 - 1),
    "emit_interval_s": (0, 1e12),  # 1e9: "never by time"
}
_WHOLE = {"r", "steps", "batch_size", "seed", "eval_every", "max_tokens", "image_size", "eval_size", "emit_every"}
_OPEN_LOW = {"lora_alpha", "lr", "init_scale"}


def check_setting(name: str, value: Any, limits: Mapping[str, tuple[float, float]] | None = None) -> Any:
    """``value`` checked against ``limits[name]`` (default :data:`LIMITS`): whole numbers stay
    whole (``3.7`` is refused, not truncated; ``3.0`` becomes ``3``), NaN and inf are refused.
    Raises a one-line ``ValueError`` naming the setting and its range."""
    low, high = (LIMITS if limits is None else limits)[name]
    if name in _WHOLE:
        return check_int(name, value, int(low), int(high))
    return check_number(name, value, low, high, low_open=name in _OPEN_LOW and low <= 0)


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run, resolved and validated (build it with
    :meth:`from_preset`; change it with :meth:`replace`).

    Attributes:
        model, data: a :data:`symlora.lab.zoo.MODELS` key and a ``load_dataset`` name.
        method: ``symlora`` / ``lora`` (the :attr:`adapter` is put on), ``head-only`` or
            ``full``.
        adapter: the adapters an adapter run puts on: ``r``, ``lora_alpha``,
            ``target_modules`` (``None``: the model's default), ``lora_dropout``,
            ``modules_to_save`` (trained with the new head), ... Its ``method`` is the
            run's for adapter runs; head-only and full runs keep it unused (method
            ``symlora``), so that switching the method back keeps the rank.
        eval_every: steps between evaluations (``None`` at construction: four per run).
        image_size, eval_size: ``None`` = the model's own input size / the task's default.
        emit_every, emit_interval_s: how often the run reports (not what it computes).
    """

    model: str
    data: str
    preset: str = ""
    method: str = "symlora"
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    lr: float = 5e-3
    steps: int = 100
    batch_size: int = 64
    seed: int = 0
    eval_every: int | None = None
    max_tokens: int = 64
    image_size: int | None = None
    eval_size: int | None = None
    device: str = "auto"
    weight_decay: float = 0.0
    warmup_frac: float = 0.05
    emit_every: int = 5
    emit_interval_s: float = 0.25

    def __post_init__(self) -> None:
        if self.method not in TRAIN_METHODS:
            raise ValueError(f"method must be one of {', '.join(TRAIN_METHODS)}, got {self.method!r}")
        if not isinstance(self.adapter, AdapterConfig):
            raise TypeError(f"adapter must be an AdapterConfig, got {type(self.adapter).__name__}")
        if self.adapter.method != (self.method if self.method in ADAPTER_METHODS else "symlora"):
            raise ValueError(f"adapter.method {self.adapter.method!r} does not follow method {self.method!r}")
        for name in LIMITS:
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, check_setting(name, value))
        if self.eval_every is None:
            object.__setattr__(self, "eval_every", max(1, self.steps // 4))

    # -- building -------------------------------------------------------------------
    @classmethod
    def build(cls, values: Mapping[str, Any], limits: Mapping[str, tuple[float, float]] | None = None
              ) -> "RunConfig":
        """A config from flat ``values`` over the defaults: names of :class:`AdapterConfig`
        fields go to :attr:`adapter`, the others to the run; an unknown name is refused.
        ``limits`` (e.g. the app's public-server bounds) are checked first, for the names
        they list."""
        values = dict(values)
        unknown = sorted(set(values) - SETTINGS)
        if unknown:
            raise ValueError(f"unknown setting {unknown[0]!r}; known: {', '.join(sorted(SETTINGS))}")
        if limits:
            for name in limits.keys() & values.keys():
                values[name] = check_setting(name, values[name], limits)
        adapter = {name: values.pop(name) for name in ADAPTER_SETTINGS & values.keys()}
        method = values.get("method", "symlora")
        adapter["method"] = method if method in ADAPTER_METHODS else "symlora"
        return cls(**values, adapter=AdapterConfig(**adapter))

    @classmethod
    def from_preset(cls, preset: str = "digits", *, limits: Mapping[str, tuple[float, float]] | None = None,
                    **overrides: Any) -> "RunConfig":
        """The preset's run with ``overrides`` (flat setting names, e.g. ``r=4, steps=30``)
        on top.  An unknown preset or setting, or a value out of range, raises a one-line
        ``ValueError``."""
        from .presets import get_preset

        return cls.build(dict(get_preset(preset).settings()) | overrides, limits)

    def replace(self, **changes: Any) -> "RunConfig":
        """A copy with some settings changed (flat names, as for :meth:`from_preset`), validated.
        A new adapter ``method`` follows the run's; ``eval_every`` is kept unless given."""
        return RunConfig.build(self.settings() | changes)

    # -- reading --------------------------------------------------------------------
    @property
    def uses_adapter(self) -> bool:
        """Whether the run puts the :attr:`adapter` on (``symlora`` / ``lora``)."""
        return self.method in ADAPTER_METHODS

    def settings(self) -> dict[str, Any]:
        """The flat settings that rebuild this config (``RunConfig.build(c.settings()) == c``)."""
        run = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "adapter"}
        return run | {name: getattr(self.adapter, name) for name in ADAPTER_SETTINGS}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the run's fields with the adapter as a nested dict (``adapter``)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "adapter"}
        d["adapter"] = dataclasses.asdict(self.adapter)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunConfig":
        """The inverse of :meth:`to_dict` (across a process boundary, from ``run.json``)."""
        values = dict(d)
        return cls(**values | {"adapter": AdapterConfig.from_dict(values["adapter"])})


# The adapter's own settings, by its field names (its ``method`` follows the run's).
ADAPTER_SETTINGS: frozenset[str] = frozenset(f.name for f in dataclasses.fields(AdapterConfig)) - {"method"}
SETTINGS: frozenset[str] = ADAPTER_SETTINGS | {f.name for f in dataclasses.fields(RunConfig) if f.name != "adapter"}
