"""Per-session run state for many users at once.

* :class:`Bases` loads each pretrained model once per process (and a few datasets).  The
  engine deep-copies the base for every run and never mutates it, so sharing is safe.
* :class:`Runs` maps a browser session to its active runs' :class:`RunFlag` s, so Stop and
  a closed tab (``demo.unload``) end exactly that session's runs within one step.
* :class:`RunFlag` is a stop flag that also pauses and single-steps a run, readable from
  another process through files (what a ZeroGPU worker sees: see :mod:`app.gpu`).
* :class:`SavedRun` is what a session keeps after a run, in ``gr.State``: CPU tensors
  (adapter/head weights) and small lists, never a live ``nn.Module``.
* :class:`TunedModels` rebuilds the tuned model of a :class:`SavedRun` on demand
  (base copy + adapter + weights) and keeps the last few small ones ready.
"""

from __future__ import annotations

import atexit
import copy
import gc
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from symlora.lab.runconfig import RunConfig

from .plots import Curve

log = logging.getLogger(__name__)

MAX_KEPT_PARAMS = 30_000_000   # a run's trained weights above this are not kept in the session
MAX_CACHED_TUNED_PARAMS = 300_000_000  # ready tuned models in all (≈ 1.2 GB: two small LMs or many ViTs)
FINAL_TTL_S = 300  # a run's last page update is kept this long for a Stop handler
PAUSE_LIMIT_S = 300  # a run paused longer than this is stopped (it holds a training slot)
TEST_SAMPLE = 32  # test images a run on the user's own data keeps for the Try tab


class Bases:
    """Pretrained models (one per name) and recently used datasets, loaded once."""

    def __init__(self, max_datasets: int = 4) -> None:
        self._models: dict[str, Any] = {}
        self._datasets: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._max_datasets = max_datasets

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def model(self, name: str) -> Any:
        """The shared base bundle ``name`` (never modify it; the engine copies it)."""
        if name in self._models:
            return self._models[name]
        with self._lock("model:" + name):
            if name not in self._models:
                from symlora.lab.zoo import load_model

                log.info("loading base model %s", name)
                bundle = load_model(name)
                bundle.model.eval()
                self._models[name] = bundle
        return self._models[name]

    def dataset(self, name: str, seed: int) -> Any:
        """Dataset ``name`` split with ``seed`` (the last few are kept)."""
        key = (name, int(seed))
        with self._guard:
            if key in self._datasets:
                self._datasets.move_to_end(key)
                return self._datasets[key]
        with self._lock(f"data:{name}:{seed}"):
            from symlora.lab.data import load_dataset

            splits = load_dataset(name, seed=int(seed))
        with self._guard:
            self._datasets[key] = splits
            while len(self._datasets) > self._max_datasets:
                self._datasets.popitem(last=False)
        return splits

    def loaded_models(self) -> list[str]:
        return list(self._models)


BASES = Bases()  # the process's pretrained models: shared by every demo and by app.gpu.train_stream


class RunFlag(threading.Event):
    """A run's stop flag, plus pause and single-step, mirrored in files under :attr:`path`.

    The app sets and reads it like a ``threading.Event`` (``set()`` = stop).  In this
    process the state is read from memory — :meth:`state` runs before every step for every
    page following the run, and :attr:`paused` at every event of every page (thirty pages on
    a teacher link made thousands of file checks a second).  The files are for a training
    function in another process (a ZeroGPU worker), which only gets :attr:`path` (a string
    survives pickling) and polls it with :func:`control_check` before every step.
    """

    ROOT = Path(tempfile.gettempdir()) / "symlora-lab-flags"

    def __init__(self) -> None:
        super().__init__()
        self.path = str(self.ROOT / uuid.uuid4().hex)
        self.closed = False
        self.last_status = ""  # the run's latest status line (shown again when it is paused)
        self._paused = False
        self._step_pending = False
        self._guard = threading.Lock()

    def _touch(self, name: str) -> None:
        if self.closed:
            return
        try:
            os.makedirs(self.path, exist_ok=True)
            Path(self.path, name).touch()
        except OSError:  # a read-only temp dir: the in-process flag still works
            log.warning("cannot write the %s file of %s", name, self.path)

    def _remove(self, name: str) -> None:
        try:
            os.remove(os.path.join(self.path, name))
        except FileNotFoundError:
            pass

    def set(self) -> None:  # stop
        super().set()
        self._touch("stop")

    def pause(self) -> None:
        with self._guard:
            self._paused = True
        self._touch("pause")

    def resume(self) -> None:
        with self._guard:
            self._paused, self._step_pending = False, False
        self._remove("pause")

    def step(self) -> None:
        """While paused: let exactly one more step run."""
        with self._guard:
            self._step_pending = True
        self._touch("step")

    @property
    def paused(self) -> bool:
        return self._paused and not self.is_set()

    def state(self) -> str:
        """``"run"``, ``"pause"`` or ``"stop"``, without waiting: the training engine's
        control (``symlora.lab.engine``).  A Step request lets exactly one step through."""
        if self.is_set():
            return "stop"
        with self._guard:
            if not self._paused:
                return "run"
            if self._step_pending:
                self._step_pending = False
                return "run"
            return "pause"

    def close(self) -> None:
        """The run is over: remove the files (idempotent)."""
        self.closed = True
        shutil.rmtree(self.path, ignore_errors=True)


def control_check(path: str | None, pause_limit_s: float = PAUSE_LIMIT_S):
    """The engine's ``stop`` callable for a :class:`RunFlag` 's files: True = stop now.

    Called before every step.  While the run is paused it waits here (so the training
    thread simply sleeps) until Resume, Step (one step, then paused again), Stop, or
    ``pause_limit_s`` (then it stops the run).
    """
    if not path:
        return None
    stop, pause, step = (os.path.join(path, name) for name in ("stop", "pause", "step"))

    def check() -> bool:
        waited_since = None
        while True:
            if os.path.exists(stop):
                return True
            if not os.path.exists(pause):
                return False
            try:
                os.remove(step)
                return False
            except FileNotFoundError:
                pass
            waited_since = waited_since or time.monotonic()
            if time.monotonic() - waited_since > pause_limit_s:
                log.info("run paused for more than %.0f s: stopping it", pause_limit_s)
                return True
            time.sleep(0.05)

    return check


_ENGINES: dict[str, Any] = {}
_ENGINES_GUARD = threading.Lock()


BUSY_VIEWERS = 2  # pages following runs above which a CPU run leaves a core to them (symlora.lab.engine)


def busy_viewers() -> int | None:
    """:data:`BUSY_VIEWERS`, or ``SYMLORA_BUSY_VIEWERS`` (a number, or ``off``: always train on
    the process's thread setting — e.g. to measure what leaving a core to the pages gains)."""
    value = os.environ.get("SYMLORA_BUSY_VIEWERS", "").strip().lower()
    if value == "off":
        return None
    return int(value) if value.isdigit() else BUSY_VIEWERS


def engine_for(device: str = "auto") -> Any:
    """The process's training engine for ``device`` (``symlora.lab.engine.Engine``, made on
    first use): every session's runs go through it, so runs with the same layout share
    their steps and identical runs are computed once.  On a GPU it admits runs by free
    memory; on a CPU as many at once as the heavy queue allows."""
    from symlora.lab.engine import Engine
    from symlora.lab.train import pick_device

    from .lab import heavy_concurrency, training_threads

    dev = pick_device(device)
    key = str(dev)
    with _ENGINES_GUARD:
        if key not in _ENGINES:
            max_runs = 64 if dev.type == "cuda" else heavy_concurrency(dev.type)
            _ENGINES[key] = Engine(load_base=BASES.model, load_data=BASES.dataset, device=key,
                                   max_runs=max_runs, pause_limit_s=PAUSE_LIMIT_S, busy_viewers=busy_viewers(),
                                   threads=training_threads() if dev.type == "cpu" else None)
            # Exit handlers run last-registered first: registered now, after torch and the
            # model libraries registered theirs, the engines stop before those tear down.
            atexit.unregister(close_engines)
            atexit.register(close_engines)
        return _ENGINES[key]


def close_engines() -> None:
    """Stop the process's engines and their runs (each at its next step boundary), then the
    pages' workers.  The server calls it when it stops, and it runs at exit as well: a thread
    still in torch's arithmetic when the interpreter shuts down aborts the process
    ("terminate called without an active exception")."""
    from .runner import Job

    with _ENGINES_GUARD:
        engines = list(_ENGINES.values())
        _ENGINES.clear()
    for engine in engines:
        engine.close()
    Job.stop_all()  # the pages' workers finish their last update


class Runs:
    """Stop flags of the runs each session has going, by ``(session, kind)`` where kind is
    ``"train"`` or ``"compare"``; plus the run ids a session made (to free them on close)."""

    def __init__(self) -> None:
        self._active: dict[tuple[str, str], set[threading.Event]] = {}
        self._finals: dict[tuple[str, str], Any] = {}
        self._made: dict[str, set[str]] = {}
        self._changed = threading.Condition()

    def begin(self, session: str, kind: str) -> RunFlag:
        """Register a new run; its stop flag is returned."""
        flag = RunFlag()
        with self._changed:
            self._active.setdefault((session, kind), set()).add(flag)
            self._finals.pop((session, kind), None)
        return flag

    def finish(self, session: str, kind: str, flag: threading.Event, final: Any = None) -> None:
        """The run is over (idempotent); ``final`` — its last page update — is kept for a
        Stop handler waiting in :meth:`wait_final`."""
        with self._changed:
            flags = self._active.get((session, kind))
            if flags is not None:
                flags.discard(flag)
                if not flags:
                    del self._active[(session, kind)]
            if final is not None:
                self._finals[(session, kind)] = (time.monotonic(), final)
            if isinstance(flag, RunFlag):
                flag.close()
            cutoff = time.monotonic() - FINAL_TTL_S  # nobody waited for these
            for key in [k for k, (t, _) in self._finals.items() if t < cutoff]:
                del self._finals[key]
            self._changed.notify_all()

    def stop(self, session: str, kind: str | None = None) -> int:
        """Ask the session's runs (of ``kind``, or all) to stop before their next step."""
        with self._changed:
            flags = [f for (s, k), fs in self._active.items() if s == session and kind in (None, k) for f in fs]
        for flag in flags:
            flag.set()
        return len(flags)

    def wait_final(self, session: str, kind: str, timeout: float) -> Any:
        """Wait until the session has no ``kind`` run; return the final update it left
        (``None`` when there is none or the wait timed out)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._active.get((session, kind)) and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(left)
            if self._active.get((session, kind)):
                return None
            item = self._finals.pop((session, kind), None)
        return None if item is None else item[1]

    def flags(self, session: str, kind: str) -> list[threading.Event]:
        """The flags of the session's ``kind`` runs now going."""
        with self._changed:
            return list(self._active.get((session, kind), ()))

    def active(self, session: str | None = None) -> int:
        """How many runs are going (in ``session``, or in all)."""
        with self._changed:
            return sum(len(fs) for (s, _), fs in self._active.items() if session in (None, s))

    def remember(self, session: str, run_id: str) -> None:
        with self._changed:
            self._made.setdefault(session, set()).add(run_id)

    def forget(self, session: str) -> set[str]:
        """Drop what is kept for ``session``; returns the run ids it made."""
        with self._changed:
            for key in [k for k in self._finals if k[0] == session]:
                del self._finals[key]
            return self._made.pop(session, set())


@dataclass
class SavedRun:
    """A finished run as a session keeps it (CPU tensors and small lists only)."""

    label: str
    config: RunConfig
    summary: dict[str, Any]
    curve: Curve
    metric_name: str
    spectra: list[tuple[int, dict[str, list[list[float]]]]] = field(default_factory=list)
    trainable_state: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    adapter_config: dict[str, Any] | None = None
    classes: list[str] | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    weights_kept: bool = True
    data_name: str | None = None  # the user's own data (its file name), None for the config's dataset
    test_sample: Any = field(default=None, repr=False)  # a few test images of the user's data (ImageDataset)
    failure: str | None = None  # why this run cannot be tried or downloaded (it diverged, failed, or has NaN weights)

    @property
    def data_label(self) -> str:
        """What the run trained on, for people: ``your data “shapes.zip”`` or ``mnist-5k``."""
        return f"your data “{self.data_name}”" if self.data_name else self.config.data

    @classmethod
    def from_result(cls, label: str, config: RunConfig, result: Any, curve: Curve,
                    spectra: list[tuple[int, dict[str, list[list[float]]]]], data_name: str | None = None,
                    test_sample: Any = None) -> "SavedRun":
        state = {k: v.detach().to("cpu") for k, v in (result.trainable_state or {}).items()}
        failure = run_failure(result, state)
        kept = failure is None and sum(v.numel() for v in state.values()) <= MAX_KEPT_PARAMS
        return cls(label=label, config=config, summary=result.summary(), curve=curve,
                   metric_name=result.metric_name, spectra=spectra, trainable_state=state if kept else {},
                   adapter_config=result.adapter_config, classes=result.classes, weights_kept=kept,
                   data_name=data_name, test_sample=test_sample, failure=failure)


def nonfinite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding NaN or ±inf."""
    return [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def run_failure(result: Any, state: dict[str, torch.Tensor]) -> str | None:
    """Why a finished run must not be served (``None`` when it may): it ended with an
    error (diverged, out of memory), or its trained weights are not all finite."""
    if getattr(result, "status", "done") == "error":
        reason = (getattr(result, "message", None) or "the run failed").rstrip(".")
        return f"{reason}. Nothing to try or download from it"
    bad = nonfinite(state)
    if bad:
        return (f"its trained weights contain NaN or inf ({bad[0]}{' and more' if len(bad) > 1 else ''}): "
                f"training diverged. Lower the learning rate or lora_alpha; nothing to try or download from it")
    return None


def rebuild_tuned(saved: SavedRun, base: Any) -> Any:
    """The tuned model of ``saved``: a copy of ``base`` with the run's new head, adapters
    and trained weights (eval mode).  Raises ``ValueError`` when the weights do not fit."""
    if saved.failure:
        raise ValueError(f"the run {saved.label} cannot be used: {saved.failure}")
    if not saved.weights_kept:
        raise ValueError("this run's trained weights were too large to keep in the session; run it again to try it")
    from symlora.lab.runs import restore_tuned

    return restore_tuned(copy.deepcopy(base), state=saved.trainable_state, adapter_config=saved.adapter_config,
                         classes=list(saved.classes) if saved.classes else None, seed=saved.config.seed)


class TunedModels:
    """Tuned models by run id: the most recent ones stay ready, within ``capacity`` models
    and ``budget`` parameters (≈ 4 bytes each); older ones are rebuilt when asked for."""

    def __init__(self, capacity: int = 3, budget: int = MAX_CACHED_TUNED_PARAMS) -> None:
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._guard = threading.Lock()
        self.capacity = capacity
        self.budget = budget

    def put(self, run_id: str, bundle: Any) -> None:
        """Keep ``bundle`` ready (not when it is too big, or its weights are not all finite:
        such a model is never served)."""
        size = sum(p.numel() for p in bundle.model.parameters())
        if size > self.budget or nonfinite(dict(bundle.model.named_parameters())):
            return
        with self._guard:
            self._items[run_id] = (bundle, size)
            self._items.move_to_end(run_id)
            while len(self._items) > self.capacity or sum(n for _, n in self._items.values()) > self.budget:
                self._items.popitem(last=False)

    def get(self, saved: SavedRun, bases: Bases) -> Any:
        """The tuned model of ``saved``; ``ValueError`` (saying why) for a failed run."""
        if saved.failure:
            raise ValueError(f"the run {saved.label} cannot be used: {saved.failure}")
        with self._guard:
            if saved.run_id in self._items:
                self._items.move_to_end(saved.run_id)
                return self._items[saved.run_id][0]
        bundle = rebuild_tuned(saved, bases.model(saved.config.model))
        self.put(saved.run_id, bundle)
        return bundle

    def drop(self, run_ids: list[str] | set[str]) -> None:
        with self._guard:
            for run_id in run_ids:
                self._items.pop(run_id, None)

    def __len__(self) -> int:
        return len(self._items)


CLOSED_SESSION_GRACE_S = 60.0  # a closed tab's page state is released this long after (env SYMLORA_SESSION_GRACE_S)


def release_session(demo: Any, session: str, grace_s: float | None = None) -> threading.Timer | None:
    """Free what Gradio keeps of a closed browser session, ``grace_s`` seconds after it closed.

    Gradio holds a per-session copy of the page's configuration (~0.3 MB for this app's 192
    components, plus a copy of every component a handler updated) until 10 000 sessions
    push it out, and a closed session's ``gr.State`` values (kept runs: weights, curves)
    for an hour: a server that sees a class a day grew by ~0.6 MB a session.  After the
    grace period, if the session is still closed, its State values are deleted (their
    ``delete_callback`` s run: tuned models are dropped) and the session's state with them.
    Returns the timer (None when the demo keeps no session state)."""
    holder = getattr(demo, "state_holder", None)
    if holder is None or not hasattr(holder, "session_data"):
        return None
    if grace_s is None:
        try:
            grace_s = float(os.environ.get("SYMLORA_SESSION_GRACE_S", CLOSED_SESSION_GRACE_S))
        except ValueError:
            grace_s = CLOSED_SESSION_GRACE_S

    def release() -> None:
        with holder.lock:
            state = holder.session_data.get(session)
            if state is None or not getattr(state, "is_closed", False):
                return  # gone already, or open again
        try:
            holder.delete_state(session)
        except Exception:  # noqa: BLE001 — a failing delete_callback must not keep the rest
            log.exception("releasing the state of session %s", session)
        with holder.lock:
            holder.session_data.pop(session, None)
            holder.time_last_used.pop(session, None)
        free_memory()

    timer = threading.Timer(max(0.0, grace_s), release)
    timer.daemon = True
    timer.start()
    return timer


FREE_EVERY_S = 1.0  # process-wide: at most one full clean-up this often


class _Freer:
    """Runs the clean-up at most once every :data:`FREE_EVERY_S` seconds, plus once after
    the last call of a burst (so nothing freed in the burst is left unreturned).

    One clean-up costs ~0.3 s of CPU holding the GIL (a full garbage collection of the app's
    heap); a class whose 30 shared runs end at once used to run 30 of them back to back.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._last = -FREE_EVERY_S
        self._trailing: threading.Timer | None = None

    def __call__(self) -> None:
        with self._guard:
            wait = self._last + FREE_EVERY_S - time.monotonic()
            if wait > 0:
                if self._trailing is None:
                    self._trailing = threading.Timer(wait, self._run_trailing)
                    self._trailing.daemon = True
                    self._trailing.start()
                return
            self._last = time.monotonic()
        _clean_up()

    def _run_trailing(self) -> None:
        with self._guard:
            self._trailing = None
            self._last = time.monotonic()
        _clean_up()


def _clean_up() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    _malloc_trim()


_FREER = _Freer()


def free_memory() -> None:
    """Return freed memory to the system: Python garbage, the GPU allocator's cache, and
    (glibc) the free pages each worker thread's malloc arena keeps after a run — at most
    once every :data:`FREE_EVERY_S` seconds process-wide, and once after a burst of calls."""
    _FREER()


def _malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        pass
