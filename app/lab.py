"""The app's one server-side object: caches, session runs, device facts and catalogs.

A :class:`Lab` is made by ``build_demo`` and closed over by its handlers, so two demos in
one process (tests) never share run state; only the read-only pretrained models
(:data:`app.sessions.BASES`) are shared by the whole process.
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import Any

from symlora.lab.runconfig import RunConfig

from .sessions import BASES, Runs, TunedModels
from .settings import default_config
from .userdata import UserDataCache

DEFAULT_PRESET = "digits"
ENGINE_HANDLERS = 32  # training handlers that may wait on the engine at once


def heavy_concurrency(device: str) -> int:
    """How many trainings run at once: ``SYMLORA_CONCURRENCY``, else 1 on a CPU with ≤ 4
    cores (2 on bigger CPUs), and on a GPU one per ~12 GB of its memory (at most 8)."""
    env = os.environ.get("SYMLORA_CONCURRENCY", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    if device == "cuda":
        import torch

        try:
            gb = torch.cuda.get_device_properties(0).total_memory / 2**30
        except Exception:  # noqa: BLE001 — e.g. ZeroGPU's main process, which has no GPU of its own
            return 2
        return max(1, min(8, int(gb // 12)))
    return 1 if (os.cpu_count() or 1) <= 4 else 2


def training_threads() -> int:
    """CPU threads a training computes on: ``SYMLORA_THREADS``, else the cores split between
    the trainings that may run at once (measured: one thread each beats oversubscription
    on a busy 2-core machine)."""
    env = os.environ.get("SYMLORA_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, (os.cpu_count() or 1) // heavy_concurrency("cpu"))


class Lab:
    """Caches and per-session state shared by every tab of one demo."""

    def __init__(self) -> None:
        self.bases = BASES  # pretrained models are read-only: one copy per process (app.gpu uses it too)
        self.runs = Runs()
        self.tuned = TunedModels()
        self.user_data = UserDataCache()

    # -- device --------------------------------------------------------------------
    @cached_property
    def device(self) -> str:
        from symlora.lab.train import pick_device

        return pick_device("auto").type

    @property
    def device_choices(self) -> list[tuple[str, str]]:
        import torch

        choices = [(f"auto ({self.device})", "auto"), ("cpu", "cpu")]
        if torch.cuda.is_available():
            try:
                name = torch.cuda.get_device_name(0)
            except Exception:  # noqa: BLE001 — ZeroGPU: the GPU is lent per run
                name = "GPU"
            choices.append((f"cuda ({name})", "cuda"))
        if self.device == "mps":
            choices.append(("mps", "mps"))
        return choices

    def device_note(self) -> str:
        if self.device == "cpu":
            return ("Running on **CPU** (no GPU found): the offline presets are sized for it — a run takes "
                    "seconds to a minute, and runs from different users take turns. Presets marked "
                    "“needs a GPU” are very slow here.")
        return f"Running on **{self.device.upper()}**."

    @cached_property
    def heavy_limit(self) -> int:
        """Training handlers at once.  They only relay the training engine's events (the
        engine decides how many runs compute: :func:`app.sessions.engine_for`), so many
        can wait together — and students on one teacher link all see the one shared run
        at once.  On ZeroGPU each handler holds a GPU process: the compute count."""
        from .gpu import ZERO_GPU

        compute = heavy_concurrency(self.device)
        return compute if ZERO_GPU else max(ENGINE_HANDLERS, compute)

    # -- catalogs ------------------------------------------------------------------
    @cached_property
    def presets(self) -> dict[str, Any]:
        from symlora.lab.presets import PRESETS

        return dict(PRESETS)

    def preset(self, name: str | None) -> Any:
        return self.presets.get(name or "") or self.presets.get(DEFAULT_PRESET) or next(iter(self.presets.values()))

    def preset_choices(self, allowed: list[str] | None = None) -> list[tuple[str, str]]:
        names = [n for n in self.presets if not allowed or n in allowed] or list(self.presets)
        return [(n + self.preset_marks(n), n) for n in names]

    def preset_marks(self, name: str) -> str:
        """`` (needs internet)`` / `` (needs a GPU)`` after a preset's name, where that applies here."""
        preset = self.presets[name]
        marks = ["needs internet"] if preset.needs_internet else []
        if self.device == "cpu" and not self.cpu_sized(preset):
            marks.append("needs a GPU")
        return f" ({', '.join(marks)})" if marks else ""

    @staticmethod
    def cpu_sized(preset: Any) -> bool:
        """Whether a preset runs in about a minute on a small CPU (``Preset.cpu_sized``)."""
        return preset.cpu_sized

    def default_config(self, preset: str | None = None) -> RunConfig:
        """The run ``preset`` (default: the default preset) makes before anyone changes a
        control: a ``symlora.lab.runconfig.RunConfig``."""
        return default_config(self.preset(preset).name)

    @cached_property
    def models(self) -> dict[str, Any]:
        from symlora.lab.zoo import MODELS

        return dict(MODELS)

    @cached_property
    def datasets(self) -> dict[str, Any]:
        from symlora.lab.data import DATASETS

        return dict(DATASETS)

    def model_task(self, model: str) -> str:
        spec = self.models.get(model)
        return getattr(spec, "task", "vision") if spec is not None else "vision"

    def data_choices(self, model: str) -> list[str]:
        """Dataset names for ``model``'s task; fortunes as one entry per installed category."""
        task = self.model_task(model)
        names: list[str] = []
        for name, spec in self.datasets.items():
            if getattr(spec, "task", task) != task:
                continue
            if name == "fortunes":
                names += [f"fortunes:{c}" for c in self.fortune_categories]
            else:
                names.append(name)
        return names

    @cached_property
    def fortune_categories(self) -> list[str]:
        from symlora.lab.data import fortune_categories

        try:
            return fortune_categories()
        except Exception:  # the Debian package is missing: the preset's own error explains
            return []
