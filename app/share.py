"""Share links: the whole setup (seed included) and the lesson view in a query string.

    ?preset=digits&model=fmnist-vit&data=mnist-5k&method=symlora&r=8&alpha=16
     &targets=qkv,proj&lr=0.003&steps=60&batch=64&seed=0&device=auto
     &lesson=1&panels=train,try,learn&presets=digits,fortunes

A link names a :class:`~symlora.lab.runconfig.RunConfig` by its settings (``dropout`` only
when the run has adapter dropout).  Parsing never fails: unknown keys are ignored and a
value that does not parse (or is out of range) is dropped with a note, so a mangled link
still opens the app.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from symlora.lab.runconfig import RunConfig

from .settings import METHOD_LABELS, app_config, check_value

PANELS: tuple[str, ...] = ("train", "compare", "try", "learn")
# query key → the run setting it carries
KEYS: dict[str, str] = {
    "preset": "preset", "model": "model", "data": "data", "method": "method", "r": "r",
    "alpha": "lora_alpha", "targets": "target_modules", "lr": "lr", "steps": "steps",
    "batch": "batch_size", "seed": "seed", "device": "device", "dropout": "lora_dropout",
}
_NUMBERS = {"r", "lora_alpha", "lora_dropout", "lr", "steps", "batch_size", "seed"}
_TRUE = {"1", "true", "yes", "on"}


@dataclass
class Lesson:
    """What a teacher's link shows: lesson mode hides advanced controls, ``panels`` are the
    visible tabs, ``presets`` the presets students may pick (empty = all)."""

    enabled: bool = False
    panels: list[str] = field(default_factory=lambda: list(PANELS))
    presets: list[str] = field(default_factory=list)


@dataclass
class Shared:
    """A parsed link: the settings it names (only those present, by their run names), the
    lesson, and notes about values that were dropped."""

    values: dict[str, Any]
    lesson: Lesson
    problems: list[str]

    def config(self, preset: str) -> RunConfig:
        """The link's run: ``preset``'s, with the link's values on top (see
        :func:`app.settings.app_config`)."""
        return app_config(preset, **{k: v for k, v in self.values.items() if k != "preset"})


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def shown(value: Any, limit: int = 60) -> str:
    """A value from a link (or a user) inside a Markdown code span: shown as typed text,
    never rendered as a link, an image or HTML (and cut to ``limit`` characters)."""
    text = " ".join(str(value).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}" if text else "(empty)"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def to_query(config: RunConfig, lesson: Lesson | None = None) -> str:
    """The query string (with the leading ``?``) that reproduces ``config``."""
    settings = config.settings()
    params = [(key, "" if settings[name] is None else _fmt(settings[name])) for key, name in KEYS.items()
              if key != "dropout"]
    if config.adapter.lora_dropout:
        params.append(("dropout", _fmt(config.adapter.lora_dropout)))
    if lesson is not None and lesson.enabled:
        params.append(("lesson", "1"))
        panels = [p for p in PANELS if p in lesson.panels] or ["train"]
        params.append(("panels", ",".join(panels)))
        if lesson.presets:
            params.append(("presets", ",".join(lesson.presets)))
    return "?" + urllib.parse.urlencode(params, safe=",")


def parse_query(params: Mapping[str, str] | str) -> Shared:
    """Read a link's query (a mapping, or the ``?a=b`` string) back into settings and lesson."""
    if isinstance(params, str):
        params = dict(urllib.parse.parse_qsl(params.lstrip("?"), keep_blank_values=True))
    values: dict[str, Any] = {}
    problems: list[str] = []
    for key, name in KEYS.items():
        raw = params.get(key)
        if raw is None:
            continue
        raw = str(raw).strip()
        try:
            if name in _NUMBERS:
                value: Any = check_value(name, _number(raw))
            elif name == "target_modules":
                value = _csv(raw)
                if not value:  # empty: the preset's layers
                    continue
            else:
                if not raw:
                    raise ValueError(raw)
                value = raw
            if name == "method" and value not in METHOD_LABELS:
                raise ValueError(f"method must be one of {', '.join(METHOD_LABELS)}")
        except ValueError as err:
            reason = str(err) if str(err).startswith(name) else ""
            problems.append(f"ignored {key}={shown(raw)} from the link" + (f" ({reason.split(', got')[0]})" if reason else ""))
            continue
        values[name] = value
    lesson = Lesson(
        enabled=str(params.get("lesson", "")).strip().lower() in _TRUE,
        panels=[p for p in _csv(str(params.get("panels", ""))) if p in PANELS] or list(PANELS),
        presets=_csv(str(params.get("presets", ""))),
    )
    return Shared(values, lesson, problems)


def restrict(choices: Iterable[str], allowed: list[str]) -> list[str]:
    """The ``choices`` a lesson allows (all of them when ``allowed`` is empty or matches none)."""
    choices = list(choices)
    kept = [c for c in choices if c in allowed]
    return kept or choices
