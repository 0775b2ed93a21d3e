"""Driving an engine run for a web page: throttled updates and readable status lines.

:func:`stream` runs ``symlora.train.run`` through :func:`app.gpu.train_stream` in the
calling thread (a :class:`Job` worker) and yields ``(event, tracker, emit)``:
``emit`` is True at most a few times a second plus at every evaluation and at the end,
so the page gets light, regular updates however fast the steps are.
"""

from __future__ import annotations

import contextvars
import math
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .plots import Curve
from .settings import METHOD_LABELS, Settings

MIN_UPDATE_S = 0.3  # at most ~3 page updates per second between evaluations


@dataclass
class Tracker:
    """What a page needs from a run so far: curves, spectrum snapshots, last event."""

    label: str
    method: str
    curve: Curve = None  # type: ignore[assignment]
    spectra: list[tuple[int, dict[str, list[list[float]]]]] = field(default_factory=list)
    last: Any = None
    metric_name: str = "accuracy"
    _last_emit: float = 0.0

    def __post_init__(self) -> None:
        if self.curve is None:
            self.curve = Curve(self.label, self.method)

    def add(self, event: Any) -> bool:
        """Record ``event``; True when the page should be updated now."""
        self.last = event
        self.metric_name = event.metric_name
        c = self.curve
        if event.loss is not None and event.kind in ("step", "eval") and (not c.steps or event.step > c.steps[-1]):
            c.steps.append(event.step)
            c.loss.append(event.loss)
            c.smoothed.append(event.smoothed_loss if event.smoothed_loss is not None else event.loss)
        if event.metric is not None:
            if c.eval_steps and c.eval_steps[-1] == event.step:
                c.metric[-1] = event.metric
            else:
                c.eval_steps.append(event.step)
                c.metric.append(event.metric)
        if event.spectrum:
            if self.spectra and self.spectra[-1][0] == event.step:
                self.spectra[-1] = (event.step, event.spectrum)
            else:
                self.spectra.append((event.step, event.spectrum))
        now = time.monotonic()
        due = event.kind in ("start", "eval") or event.is_final or now - self._last_emit >= MIN_UPDATE_S
        if due:
            self._last_emit = now
        return due


def format_metric(name: str, value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1%}" if name == "accuracy" else f"{value:.2f}"


def format_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


def status_line(event: Any, label: str = "") -> str:
    """One Markdown line on where a run stands."""
    name = event.metric_name
    who = f"**{label}** · " if label else ""
    if event.kind == "start":
        return (f"{who}Starting: {event.trainable_params:,} trainable of {event.total_params:,} parameters · "
                f"{name} before training **{format_metric(name, event.metric)}**")
    if event.is_final:
        res = event.result
        before = format_metric(name, res.metric_before if res else None)
        after = format_metric(name, res.metric_after if res else event.metric)
        word = {"done": "✓ Done", "stopped": "■ Stopped", "error": "⚠ Error"}[event.kind]
        timing = f"{res.steps_done} steps in {format_seconds(res.wall_s)}" if res else ""
        msg = f" · {event.message}" if event.message and event.kind != "done" else ""
        return f"{who}{word}: {name} {before} → **{after}** · {timing}{msg}"
    throughput = f"{event.throughput:,.0f} {event.throughput_unit}" if event.throughput else "–"
    return (f"{who}Step **{event.step}/{event.total_steps}** · {loss_text(event)}{metric_text(event)} · {throughput} "
            f"· ETA {format_seconds(event.eta_s)}")


def loss_text(event: Any) -> str:
    """``training loss 1.31 (last batch; smoothed 1.40)`` — the raw value first, so that it
    reads next to the held-out number; the smoothed one is the curve's line."""
    if event.loss is None:
        return "training loss –"
    text = f"training loss {event.loss:.3f} (last batch"
    if event.smoothed_loss is not None:
        text += f"; smoothed {event.smoothed_loss:.3f}"
    return text + ")"


def metric_text(event: Any) -> str:
    """`` · held-out perplexity **3.85** (held-out loss 1.348, …)`` — perplexity is
    e^loss, so its loss is shown too — or `` · held-out accuracy **93.1%**``."""
    if event.metric is None:
        return ""
    name = event.metric_name
    if name == "perplexity" and event.metric > 0:
        return (f" · held-out {name} **{format_metric(name, event.metric)}** "
                f"(held-out loss {math.log(event.metric):.3f}, comparable to the training loss)")
    return f" · held-out {name} **{format_metric(name, event.metric)}**"


def run_label(settings: Settings, prefix: str = "") -> str:
    """``SymLoRA r=8`` / ``Head only`` — how a run is named in legends and menus."""
    name = METHOD_LABELS.get(settings.method, settings.method)
    if settings.is_adapter:
        name += f" r={settings.r}"
    return f"{prefix}{name}"


def eval_every(settings: Settings) -> int:
    """Evaluate as many times per run as the preset does, whatever the number of steps
    (the preset's ``eval_every`` is tuned for its own step count)."""
    from symlora.presets import get_preset

    try:
        preset = get_preset(settings.preset)
        evaluations = max(1, preset.steps // max(1, preset.eval_every or preset.steps))
    except ValueError:
        evaluations = 4
    return max(1, settings.steps // evaluations)


def stream(settings: Settings, *, stop: Any, label: str, data: Any = None,
           keep_model: bool = True) -> Iterator[tuple[Any, Tracker, bool]]:
    """Run ``settings`` through :func:`app.gpu.train_stream` (the ZeroGPU-ready call) and
    yield ``(event, tracker, emit)`` for each engine event.

    ``stop``: the run's :class:`~app.sessions.RunFlag` (its files carry Stop / Pause /
    Step); ``data``: the user's own ``ImageSplits`` / ``TextSplits``, or None for the
    settings' dataset; ``keep_model``: hand the trained model back in-process (not across
    a ZeroGPU process boundary, where the Try tab rebuilds it from the weights)."""
    from .gpu import ZERO_GPU, data_payload, event_from_payload, train_stream

    tracker = Tracker(label, settings.method)
    config = settings.to_run_config(eval_every=eval_every(settings)).to_dict()
    payload = data_payload(data) if data is not None else None
    control = getattr(stop, "path", None)
    for item in train_stream(config, payload, control, keep_model and not ZERO_GPU):
        event = event_from_payload(item)
        emit = tracker.add(event)
        yield event, tracker, emit


class Job:
    """Run a producer (a generator of page updates) in a worker thread the app owns.

    Gradio's Stop (``cancels=``) and a closed tab close the *handler*, not threads it
    started; so the handler only relays what the worker produces, and the worker is
    ended by its stop flag (checked by the engine before every step).  If the handler is
    closed early, :meth:`relay` sets the flag itself, so no run outlives its page.
    """

    _DONE = object()

    def __init__(self, producer: Iterator[Any], stop: Any, name: str = "symlora-run") -> None:
        self._queue: queue.Queue = queue.Queue()
        self._producer = producer
        self.stop = stop
        # The handler's context (Gradio's request): ``spaces.GPU`` reads it in the worker.
        context = contextvars.copy_context()
        self.thread = threading.Thread(target=context.run, args=(self._work,), name=name, daemon=True)
        self.thread.start()

    def _work(self) -> None:
        try:
            for item in self._producer:
                self._queue.put(item)
        except BaseException as err:  # noqa: BLE001 — handed to the handler thread
            self._queue.put(_Failure(err))
        finally:
            self._queue.put(self._DONE)

    def relay(self) -> Iterator[Any]:
        """Yield the worker's items in order; re-raise its exception."""
        finished = False
        try:
            while True:
                item = self._queue.get()
                if item is self._DONE:
                    finished = True
                    return
                if isinstance(item, _Failure):
                    finished = True
                    raise item.error
                yield item
        finally:
            if not finished:
                self.stop.set()


@dataclass
class _Failure:
    error: BaseException


@dataclass
class Update:
    """One page update from a worker: output values, and a warning to show (if any)."""

    values: tuple
    warning: str | None = None
