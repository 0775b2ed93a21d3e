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
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

Method = Literal["symlora", "lora"]
METHODS: tuple[str, ...] = ("symlora", "lora")
SYMLORA_INITS: tuple[str, ...] = ("gaussian", "orthogonal")
R_MAX = 4096  # wider than any layer this library adapts; a larger rank is a typo
# The update is multiplied by s = lora_alpha / r.  Usual values of s are 0.5–4; at s = 1e4 one
# AdamW step of size lr already moves the outputs by ~1e4·lr, so anything larger can only
# overflow float32 (lora_alpha = 1e300 gives a NaN loss at step 1).
MAX_SCALING = 1e4


def _fmt(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def check_int(name: str, value: Any, low: int, high: int) -> int:
    """``value`` as an ``int`` in ``[low, high]``, or a one-line ``ValueError`` naming
    ``name`` and the range.  A whole float (3.0) is accepted; 3.7, NaN, inf, bools and
    text are refused, never rounded or truncated."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok and not isinstance(value, numbers.Integral):
        ok = math.isfinite(value) and float(value).is_integer()
    if ok and low <= value <= high:
        return int(value)
    return _refuse(name, value, f"a whole number from {_fmt(low)} to {_fmt(high)}")


def check_number(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> float:
    """``value`` as a finite ``float`` in ``[low, high]`` (``(low, high]`` with
    ``low_open``), or a one-line ``ValueError`` naming ``name`` and the range."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (low < value if low_open else low <= value) and value <= high:
        return float(value)
    interval = f"{'(' if low_open else '['}{_fmt(low)}, {_fmt(high)}]"
    return _refuse(name, value, f"a finite number in {interval}")


def _refuse(name: str, value: Any, allowed: str) -> NoReturn:
    shown = repr(value) if isinstance(value, str) else str(value)
    if len(shown) > 40:
        shown = shown[:37] + "…"
    raise ValueError(f"{name} must be {allowed}, got {shown}")


def alpha_limit(r: int, use_rslora: bool = False) -> float:
    """The largest ``lora_alpha`` allowed at rank ``r``: scaling s ≤ :data:`MAX_SCALING`."""
    return MAX_SCALING * (math.sqrt(r) if use_rslora else r)


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

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        self.r = check_int("r", self.r, 1, R_MAX)
        self.lora_alpha = check_number("lora_alpha", self.lora_alpha, 0, alpha_limit(self.r, self.use_rslora),
                                       low_open=True)
        if not (isinstance(self.lora_dropout, numbers.Real) and 0.0 <= self.lora_dropout < 1.0):
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        self.init_scale = check_number("init_scale", self.init_scale, 0, 1e3, low_open=True)
        if self.lambda_lr_ratio is not None:
            self.lambda_lr_ratio = check_number("lambda_lr_ratio", self.lambda_lr_ratio, 0, 1e6, low_open=True)
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
