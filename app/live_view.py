"""What a page shows of a training run as it goes, built no more often than needed.

A run streams an event per step; a page gets an update at most every
:func:`update_interval` seconds (the start, evaluations, a pause and the end always), and
only the figures that changed (:class:`LiveView`).  Pages showing the same points — the
students on one teacher link follow one shared run — share the figures (:data:`FIGURES`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import gradio as gr

from . import plots
from .lab import Lab
from .runner import MIN_UPDATE_S


class SharedFigures:
    """Page figures built once for identical views, a few kept (least recently used out).

    The sessions that follow one shared run (a teacher link) show the same curves at the
    same step; building a plotly figure costs more than a training step of the digits
    preset, and thirty pages each building their own starved the run they were watching.
    Figures are only read after they are built (Gradio serialises them), so sharing is safe.
    """

    def __init__(self, capacity: int = 64) -> None:
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._building: dict[Any, threading.Event] = {}
        self._guard = threading.Lock()
        self.capacity = capacity

    def get(self, key: Any, build: Callable[[], Any], keep: Any = None) -> Any:
        """The figure for ``key``, built by ``build()`` on a miss; ``keep`` is held with it
        (the object whose ``id`` is in the key, so the id cannot be reused meanwhile).
        Pages asking for a figure that another page is building wait for it: at an
        evaluation every page of a teacher link asks at the same moment."""
        while True:
            with self._guard:
                if key in self._items:
                    self._items.move_to_end(key)
                    return self._items[key][0]
                building = self._building.get(key)
                if building is None:
                    building = self._building[key] = threading.Event()
                    break
            building.wait(timeout=10.0)  # then build it here, should the builder have failed
        try:
            value = build()
            with self._guard:
                self._items[key] = (value, keep)
                while len(self._items) > self.capacity:
                    self._items.popitem(last=False)
        finally:
            with self._guard:
                del self._building[key]
            building.set()
        return value


FIGURES = SharedFigures()


SHARED_POINTS = 20  # step-update points of a run that crowded pages share


def update_interval(active_runs: int) -> float:
    """Seconds between a page's step updates (evaluations and the end are always sent):
    :data:`~app.runner.MIN_UPDATE_S`, stretched when many pages follow runs at once — each
    update costs the server figures and JSON, and a class shares a few cores."""
    return MIN_UPDATE_S * max(1.0, active_runs / 2)


def curves_view(curve: Any, metric_name: str) -> Any:
    """The curves figure of one run, shared by the pages showing the same points."""
    key = ("curves", metric_name, curve.label, curve.method, tuple(curve.steps), tuple(curve.loss),
           tuple(curve.smoothed), tuple(curve.eval_steps), tuple(curve.metric))
    return FIGURES.get(key, lambda: plots.curves_figure([curve], metric_name))


def spectrum_view(spectra: list, method: str, index: int | None = None) -> tuple[Any, Any]:
    """(spectrum figure, slider update) for snapshot ``index`` (default: the latest)."""
    if not spectra:
        return plots.spectrum_figure(None, method), gr.update(minimum=0, maximum=1, value=0, interactive=False)
    index = len(spectra) - 1 if index is None else max(0, min(int(index), len(spectra) - 1))
    step, spec = spectra[index]
    # the same snapshot object (a shared run's event) → the same figure
    fig = FIGURES.get(("spectrum", method, step, id(spec)), lambda: plots.spectrum_figure(spec, method, step), keep=spec)
    return fig, gr.update(minimum=0, maximum=max(1, len(spectra) - 1), value=index, interactive=len(spectra) > 1)


def memory_rows(tracker_label: str, event: Any) -> list[tuple[str, dict[str, int]]]:
    return [(tracker_label, event.memory.to_dict())]


class LiveView:
    """What one page already shows of a run, so that each update sends only what changed
    and comes at most every :func:`update_interval` seconds (the start, evaluations, a
    pause and the end are always sent)."""

    def __init__(self, lab: Lab, label: str, method: str, steps: int = 0) -> None:
        self.lab, self.label, self.method = lab, label, method
        self.spectra = -1  # snapshots shown
        self.memory_shown: dict[str, int] | None = None
        self.sent = 0.0
        # With many pages, step updates come only at the first event past each of ~20
        # shared points of the run: pages following one run (a teacher link) then show the
        # same points and share their figures, instead of each building its own.
        self.stride = max(1, steps // SHARED_POINTS)
        self.last_step = -1  # of the run's previous event

    def due(self, event: Any, emit: bool, paused: bool) -> bool:
        """Whether this event goes to the page (``emit``: the tracker's own throttle)."""
        at_point = event.step // self.stride > self.last_step // self.stride
        self.last_step = event.step
        if not (event.kind in ("start", "eval") or event.is_final or paused):
            interval = update_interval(self.lab.runs.active())
            crowded = interval > MIN_UPDATE_S
            if time.monotonic() - self.sent < interval:
                return False
            if crowded and not at_point:  # the run's shared points, not the page's own timer
                return False
            if not crowded and not emit:
                return False
        self.sent = time.monotonic()
        return True

    def spectrum(self, tracker: Any, final: bool) -> tuple[Any, Any]:
        """(figure, slider) of the latest snapshot, or skips when the page has it already."""
        if len(tracker.spectra) == self.spectra and not final:
            return gr.skip(), gr.skip()
        self.spectra = len(tracker.spectra)
        return spectrum_view(tracker.spectra, self.method)

    def memory(self, event: Any) -> Any:
        """The memory figure, or a skip when the page has it already."""
        memory = event.memory.to_dict() if event.memory is not None else None
        same = memory == self.memory_shown and not event.is_final
        self.memory_shown = memory
        if same:
            return gr.skip()
        return FIGURES.get(("memory", self.label, tuple(sorted((memory or {}).items()))),
                           lambda: plots.memory_figure(memory_rows(self.label, event)))
