"""Driving an engine run for a web page: throttled updates and readable status lines.

:func:`stream` submits the run to the process's training engine (``symlora.lab.engine``, see
:func:`app.sessions.engine_for`: runs of a layout share their steps, identical runs are
computed once) and yields ``(event, tracker, emit)`` in the calling thread (a :class:`Job`
worker); on ZeroGPU, where a run must happen inside ``spaces.GPU``, it runs
:func:`app.gpu.train_stream` instead.  ``emit`` is True at most a few times a second plus
at every evaluation and at the end, so the page gets light, regular updates however fast
the steps are.  :attr:`Tracker.note` says when a run trains together with others or
replays an identical one.
"""

from __future__ import annotations

import contextvars
import math
import queue
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from symlora.lab.runconfig import RunConfig

from .plots import Curve
from .settings import METHOD_LABELS

MIN_UPDATE_S = 0.3  # at most ~3 page updates per second between evaluations


@dataclass
class Tracker:
    """What a page needs from a run so far: curves, spectrum snapshots, last event."""

    label: str
    method: str
    curve: Curve = None  # type: ignore[assignment]
    spectra: list[tuple[int, dict[str, list[list[float]]]]] = field(default_factory=list)
    last: Any = None
    bundle: Any = None  # the tuned model, rebuilt in this process (for Try), once the run is done
    symmetry: tuple[float, int] | None = None  # a LoRA run's symmetric share (app.analysis.symmetric_share)
    metric_name: str = "accuracy"
    peers: int = 0  # other runs training in the same step (the engine's shared steps)
    shared: str | None = None  # "running" / "finished": an identical run is being replayed
    shared_age_s: float = 0.0
    _last_emit: float = 0.0

    @property
    def note(self) -> str:
        """What to add to the status line: the replay of an identical run, or the
        company this run trains with ("" when neither)."""
        if self.shared:
            return (f"  \n*Same settings as a run {format_age(self.shared_age_s)}: replaying it — "
                    f"change the seed for your own.*")
        last = self.last
        if self.peers > 0 and last is not None and not last.is_final:
            return f" · training together with {self.peers} other run{'s' if self.peers > 1 else ''}"
        return ""

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


def format_age(s: float) -> str:
    """``just now`` / ``40 s ago`` / ``2 min ago``."""
    if s < 5:
        return "just now"
    return f"{s:.0f} s ago" if s < 90 else f"{s / 60:.0f} min ago"


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


def run_label(config: RunConfig, prefix: str = "") -> str:
    """``SymLoRA r=8`` / ``Head only`` — how a run is named in legends and menus."""
    name = METHOD_LABELS.get(config.method, config.method)
    if config.uses_adapter:
        name += f" r={config.adapter.r}"
    return f"{prefix}{name}"


def stream(config: RunConfig, *, stop: Any, label: str, data: Any = None,
           keep_model: bool = True) -> Iterator[tuple[Any, Tracker, bool]]:
    """Run ``config`` and yield ``(event, tracker, emit)`` for each engine event.

    ``stop``: the run's :class:`~app.sessions.RunFlag` (Stop / Pause / Step); ``data``:
    the user's own ``ImageSplits`` / ``TextSplits``, or None for the config's dataset;
    ``keep_model``: rebuild the tuned model in this process when the run is done, as
    ``tracker.bundle`` (for Try), with a LoRA run's symmetric share as ``tracker.symmetry``."""
    from .gpu import ZERO_GPU

    tracker = Tracker(label, config.method)
    if ZERO_GPU:  # the run must happen inside spaces.GPU, in its own process
        yield from _stream_zero_gpu(config, tracker, stop, data)
        return
    from symlora.lab.engine import data_key

    from .sessions import engine_for

    control = getattr(stop, "state", None)
    handle = engine_for(config.device).submit(config, dataset=data, data_key=data_key(data) if data is not None else None,
                                              control=control)
    tracker.shared, tracker.shared_age_s = handle.shared, handle.age_s
    try:
        for event in handle.events():
            if event.is_final and event.result is not None and keep_model and handle.shared is None:
                # Only the run's first page rebuilds the tuned model: thirty pages on a teacher
                # link each rebuilding (and holding) a copy of an LM cost gigabytes at once.
                # The others' Try tab rebuilds on demand, within its cache's budget.
                _rebuild(tracker, event.result)
            tracker.peers = handle.peers()
            emit = tracker.add(event)
            yield event, tracker, emit
    finally:
        handle.cancel()


def _rebuild(tracker: Tracker, result: Any) -> None:
    """The tuned model of a finished run, rebuilt here from its weights (as the Try tab
    would; the result itself may be shared with other sessions and stays untouched), and
    the LoRA symmetry share measured on it."""
    import copy

    from symlora.lab.runs import restore_tuned

    from .analysis import symmetric_share
    from .sessions import BASES

    if not result.trainable_state:
        return
    try:
        tracker.bundle = restore_tuned(copy.deepcopy(BASES.model(result.config["model"])), state=result.trainable_state,
                                       adapter_config=result.adapter_config, classes=result.classes,
                                       seed=result.config.get("seed", 0))
        if result.method == "lora":
            tracker.symmetry = symmetric_share(tracker.bundle.model)
    except (ValueError, RuntimeError):
        pass  # Try rebuilds it on demand and says why it can't


def _stream_zero_gpu(config: RunConfig, tracker: Tracker, stop: Any, data: Any
                     ) -> Iterator[tuple[Any, Tracker, bool]]:
    """One run through :func:`app.gpu.train_stream` (the ``spaces.GPU`` function, in its own
    process: the config, data and events cross it as plain data)."""
    from symlora.lab.events import TrainEvent

    from .gpu import data_payload, train_stream

    payload = data_payload(data) if data is not None else None
    control = getattr(stop, "path", None)
    for item in train_stream(config.to_dict(), payload, control):
        event = TrainEvent.from_payload(item["event"])
        if event.is_final:
            tracker.symmetry = item.get("symmetry")
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
    _live: weakref.WeakSet[Job] = weakref.WeakSet()  # the process's workers (see stop_all)

    def __init__(self, producer: Iterator[Any], stop: Any, name: str = "symlora-run") -> None:
        self._queue: queue.Queue = queue.Queue()
        self._producer = producer
        self.stop = stop
        # The handler's context (Gradio's request): ``spaces.GPU`` reads it in the worker.
        context = contextvars.copy_context()
        self.thread = threading.Thread(target=context.run, args=(self._work,), name=name, daemon=True)
        Job._live.add(self)
        self.thread.start()

    @classmethod
    def stop_all(cls, timeout: float = 10.0) -> None:
        """Stop every worker still going and wait for them (``timeout`` s in all).  For the
        server's exit: a worker still in torch's arithmetic when the interpreter ends aborts
        the process (its last update — the tuned model, the final figures — computes after
        its run stopped)."""
        deadline = time.monotonic() + timeout
        jobs = list(cls._live)
        for job in jobs:
            job.stop.set()
        for job in jobs:
            job.thread.join(max(0.0, deadline - time.monotonic()))

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
