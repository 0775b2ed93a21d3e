"""The Train controls ↔ one run: the two functions the tabs call.

A run is a :class:`~symlora.lab.runconfig.RunConfig` everywhere (tabs, share links, the
engine).  The controls show some of its settings (:data:`FIELDS`, in the order a Gradio
handler gets them); :func:`run_config_from_ui` turns their values into the run — the
preset's, with what the controls say on top, validated once against the app's bounds
(:data:`LIMITS`) — and :func:`ui_values_from` gives the controls' values back.
"""

from __future__ import annotations

from typing import Any

from symlora.config import check_int, check_number
from symlora.lab.runconfig import RunConfig

METHOD_CHOICES: list[tuple[str, str]] = [
    ("SymLoRA", "symlora"),
    ("LoRA", "lora"),
    ("Head only", "head-only"),
    ("Full fine-tune", "full"),
]
METHOD_LABELS: dict[str, str] = {value: label for label, value in METHOD_CHOICES}
ADAPTER_METHODS = ("symlora", "lora")  # the methods that put the run's adapter on

# Bounds a page (and a share link) may ask for on a public server; narrower than the engine's.
LIMITS: dict[str, tuple[float, float]] = {
    "r": (1, 64),
    "lora_alpha": (0.5, 256),
    "lora_dropout": (0.0, 0.9),
    "lr": (1e-6, 1.0),
    "steps": (1, 1000),
    "batch_size": (1, 512),
    "seed": (0, 2**32 - 1),
}
# The controls' values, in the order the Train tab's handlers take them.  ``targets`` is the
# adapter's target_modules as comma-separated text ("" = the model's default layers).
FIELDS: tuple[str, ...] = ("preset", "model", "data", "method", "r", "lora_alpha", "targets", "lr", "steps",
                           "batch_size", "seed", "device")
_WHOLE = {"r", "steps", "batch_size", "seed", "max_tokens", "gen_seed"}  # integers: 3.7 is refused, not truncated
MIN_EVAL_GAP = 5  # steps: one evaluation of the digits test set costs about 8 training steps


def check_value(name: str, value: Any, limits: dict[str, tuple[float, float]] | None = None) -> Any:
    """One value checked against ``limits[name]`` (default :data:`LIMITS`) by the core's own
    checks: a one-line ``ValueError`` naming it and its range.  The controls check what a
    page sends with it (:mod:`app.checks`), share links drop a bad value and keep the rest."""
    low, high = (limits or LIMITS)[name]
    if name in _WHOLE:
        return check_int(name, value, int(low), int(high))
    return check_number(name, value, low, high)


def eval_every(preset: str, steps: int) -> int:
    """Evaluate as many times per run as the preset does, whatever the number of steps
    (the preset's cadence is tuned for its own step count) — but never more often than
    every :data:`MIN_EVAL_GAP` steps: a 5-step run is evaluated before and after only."""
    from symlora.lab.presets import get_preset

    try:
        chosen = get_preset(preset).config
        evaluations = max(1, chosen.steps // max(1, chosen.eval_every or chosen.steps))
    except ValueError:
        evaluations = 4
    return max(MIN_EVAL_GAP, steps // evaluations)


def app_config(preset: str, **overrides: Any) -> RunConfig:
    """The run a page makes: ``preset``'s, with ``overrides`` (setting names, e.g. ``r=4``)
    checked against :data:`LIMITS` and the evaluation cadence of :func:`eval_every`."""
    from symlora.lab.presets import get_preset

    steps = overrides.get("steps", get_preset(preset).config.steps)
    if "steps" in overrides:
        steps = check_value("steps", steps)
    return RunConfig.from_preset(preset, limits=LIMITS, **{"eval_every": eval_every(preset, steps)} | overrides)


def default_config(preset: str) -> RunConfig:
    """What the controls show for ``preset`` before anyone touches them."""
    return app_config(preset)


def _targets(value: Any) -> list[str] | None:
    if isinstance(value, str):
        value = value.split(",")
    names = [str(part).strip() for part in (value or []) if str(part).strip()]
    return names or None


def run_config_from_ui(*values: Any, **more: Any) -> RunConfig:
    """The run the controls ask for: their values in :data:`FIELDS` order (as a Gradio
    handler gets them; ``more``: settings without a control, e.g. ``lora_dropout``).
    Empty model / data / targets mean the preset's; a value out of :data:`LIMITS` (or not
    whole where it must be) raises a one-line ``ValueError``."""
    if len(values) != len(FIELDS):
        raise TypeError(f"run_config_from_ui takes {len(FIELDS)} control values ({', '.join(FIELDS)}), got {len(values)}")
    shown = dict(zip(FIELDS, values))
    preset = shown.pop("preset")
    overrides = {name: value for name, value in shown.items() if name not in ("model", "data", "targets")}
    overrides |= {name: shown[name] for name in ("model", "data") if shown[name]}
    if _targets(shown["targets"]):  # none ticked: the preset's layers (as before), else the model's default
        overrides["target_modules"] = _targets(shown["targets"])
    return app_config(preset, **overrides | more)


def ui_values_from(config: RunConfig) -> dict[str, Any]:
    """The controls' values for ``config``, by :data:`FIELDS` name (in that order): the
    inverse of :func:`run_config_from_ui` (``targets`` as a list of layer names)."""
    targets = config.adapter.target_modules
    return {"preset": config.preset, "model": config.model, "data": config.data, "method": config.method,
            "r": config.adapter.r, "lora_alpha": config.adapter.lora_alpha,
            "targets": [targets] if isinstance(targets, str) else list(targets or []),
            "lr": config.lr, "steps": config.steps, "batch_size": config.batch_size, "seed": config.seed,
            "device": config.device}

