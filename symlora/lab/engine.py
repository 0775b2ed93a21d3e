"""A whole class trains at once: one scheduler for many runs, identical runs computed once.

    engine = Engine(load_base=my_models.get)
    handle = engine.submit(RunConfig.from_preset("digits", seed=3), control=lambda: "run")
    for event in handle.events():          # past events first, then live ones
        print(event.step, event.loss)
    engine.close()

* **Groups.**  Runs that can share a frozen base and an adapter layout train in one
  :class:`symlora.lab.multirun.Group` (one stacked step for all of them).  A run joins its
  group at the next step boundary and leaves as soon as it is done, stopped or failed;
  groups of different layouts take turns, one step each.  Runs that cannot share a base
  (full fine-tuning, BatchNorm models) train alone through ``symlora.lab.train.run`` in a
  thread of their own.
* **Identical runs are computed once.**  :func:`run_key` hashes everything that decides a
  run's result.  A submit whose key equals a running run subscribes to it (its events so
  far are replayed, then the live ones); equal to a finished run kept in the bounded,
  time-limited cache, its events replay at once and its result — tuned weights included —
  is shared read-only.  A run with several subscribers stops only when all have cancelled.
* **Control.**  ``control()`` (per subscriber, called before each of the run's steps, must
  not block) answers ``"run"``, ``"pause"`` or ``"stop"``.  A paused run skips steps while
  its group goes on; one paused longer than ``pause_limit_s`` is stopped.
* **Admission.**  On a GPU a run joins when free device memory allows its measured
  footprint (the group's first step is measured); on any device at most ``max_runs`` runs
  train at once, the others wait in order.
* **Threads on a CPU.**  The engine's training threads compute on ``threads`` threads
  (:func:`symlora.lab.threads.compute_on`: the process's default for other threads is left
  alone; a server sets it to one, see :mod:`symlora.lab.threads`).  While more than
  ``busy_viewers`` subscribers follow runs (a class on a teacher link: their pages are
  served by the same process on the same cores), the training thread uses one thread
  fewer, leaving a core to the pages.  Measured on the 2-core machine
  (``bench/classroom.py``, 30 pages on one link, 100-step digits): two OpenMP threads
  stall whenever a page's work takes one of their cores (they wait for each other at every
  parallel region), so the shared run trained slower with two threads than with one.  Only
  where results do not depend on it: bf16 runs (oneDNN's products give the same bits with
  1 or 2 threads, measured on whole digits runs); float32 ones (MKL) differ in the last
  bits, so they keep ``threads``.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from . import precision
from .data import ImageSplits, TextSplits
from .events import TrainEvent
from .multirun import Group, Member, layout_key, prepare_member, stackable
from .threads import compute_on
from .train import RunConfig, pick_device
from .train import run as train_run

log = logging.getLogger(__name__)

Control = Callable[[], str]
# Fields that change how often a run reports, not what it computes.
_NOT_IN_KEY = ("device", "emit_every", "emit_interval_s")


def code_version() -> str:
    from .. import __version__

    return __version__


def run_key(config: RunConfig, *, data_key: str | None = None, device: str | torch.device = "cpu") -> str:
    """A hash of everything that decides a run's result: the resolved config (data, model,
    method, r, lora_alpha, targets, lr, steps, batch, seed, evaluation cadence, …), the
    data's identity (``data_key``, e.g. an upload's content hash, else the dataset's
    name), the device type, the compute dtype and the code version."""
    values = {k: v for k, v in config.to_dict().items() if k not in _NOT_IN_KEY}
    device_type = torch.device(device).type
    values["data"] = {"key": data_key} if data_key is not None else {"name": config.data}
    values["device_type"] = device_type
    values["dtype"] = precision.dtype_name(precision.compute_dtype(device))
    values["version"] = code_version()
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def data_key(splits: ImageSplits | TextSplits) -> str:
    """A content hash of a dataset (an upload): equal data, equal key."""
    h = hashlib.sha256()
    if isinstance(splits, ImageSplits):
        h.update(json.dumps(list(splits.train.classes)).encode())
        for part in (splits.train, splits.test):
            for t in (part.images, part.labels):
                t = t.contiguous().cpu()
                h.update(str((t.dtype, tuple(t.shape))).encode())
                h.update(t.numpy().tobytes())
    else:
        h.update(json.dumps([list(splits.train), list(splits.test)]).encode())
    return h.hexdigest()[:20]


# --------------------------------------------------------------------------- one run's record
@dataclass
class _Subscriber:
    control: Control | None
    cancelled: bool = False
    final: TrainEvent | None = None  # its own end, when it stopped a run that others keep


class _Record:
    """One computed run: its events (kept for replay), its subscribers, its state."""

    def __init__(self, key: str, cfg: RunConfig, shareable: bool) -> None:
        self.key = key
        self.cfg = cfg
        self.shareable = shareable
        self.created = time.monotonic()
        self.finished_at: float | None = None
        self.events: list[TrainEvent] = []
        self.error: BaseException | None = None
        self.closed = False
        self.subscribers: list[_Subscriber] = []
        self.peers = 0
        self.paused_since: float | None = None
        self.left: list[_Subscriber] = []  # stopped it through their control while others stay
        self.cond = threading.Condition()

    def add(self, event: TrainEvent) -> None:
        with self.cond:
            self.events.append(event)
            if event.is_final:
                self.closed = True
                self.finished_at = time.monotonic()
            self.cond.notify_all()

    def fail(self, error: BaseException) -> None:
        with self.cond:
            self.error = error
            self.closed = True
            self.finished_at = time.monotonic()
            self.cond.notify_all()

    @property
    def status(self) -> str | None:
        return self.events[-1].kind if self.closed and self.events else None

    def decide(self, pause_limit_s: float) -> tuple[str, str | None]:
        """("run" | "pause" | "stop", why) from the subscribers' controls."""
        states = []
        for sub in self.subscribers:
            if sub.cancelled:
                continue
            try:
                state = sub.control() if sub.control is not None else "run"
            except Exception:  # noqa: BLE001 — a broken control must not end the others' runs
                log.exception("a run's control failed; the run goes on")
                state = "run"
            if state == "stop":
                sub.cancelled = True
                self.left.append(sub)
            else:
                states.append(state)
        if not states:
            self.left.clear()  # the run ends: they get its own final event
            return "stop", None
        if "run" in states:
            self.paused_since = None
            return "run", None
        now = time.monotonic()
        self.paused_since = self.paused_since or now
        if now - self.paused_since > pause_limit_s:
            return "stop", f"paused for more than {pause_limit_s:.0f} s"
        return "pause", None


class RunHandle:
    """A subscriber's view of a run (see :meth:`Engine.submit`)."""

    def __init__(self, record: _Record, subscriber: _Subscriber, shared: str | None) -> None:
        self._record = record
        self._sub = subscriber
        self.key = record.key
        self.shared = shared  # None, or "running" / "finished" when the submit matched an existing run

    @property
    def age_s(self) -> float:
        """Seconds since the run was first submitted."""
        return time.monotonic() - self._record.created

    def peers(self) -> int:
        """How many other runs took the run's last step together with it."""
        return self._record.peers

    def events(self, timeout: float | None = None) -> Iterator[TrainEvent]:
        """The run's events: the past ones at once, then live ones until the final one.
        Raises what broke the run's preparation (a bad dataset, a model that won't load)."""
        rec, i = self._record, 0
        while True:
            with rec.cond:
                if i >= len(rec.events) and not rec.closed and self._sub.final is None:
                    if not rec.cond.wait(timeout):
                        raise TimeoutError(f"no event from run {rec.key} for {timeout} s")
                batch, closed, error = rec.events[i:], rec.closed, rec.error
                own_final = self._sub.final
            i += len(batch)
            if own_final is not None and not closed:
                yield own_final
                return
            yield from batch
            if closed and i >= len(rec.events):
                if error is not None:
                    raise error
                return

    def cancel(self) -> None:
        """This subscriber is gone; the run stops (before its next step) when nobody is left."""
        self._sub.cancelled = True

    @property
    def done(self) -> bool:
        return self._record.closed


# --------------------------------------------------------------------------- the engine
@dataclass
class _Waiting:
    record: _Record
    member: Member
    layout: tuple
    base: Any


@dataclass
class _GroupSlot:
    group: Group
    records: list[_Record] = field(default_factory=list)
    idle_since: float | None = None
    footprint: int = 0  # measured device bytes per run (GPU)


class Engine:
    """The process's training scheduler (see the module docstring).

    Args:
        load_base: ``name -> bundle`` (e.g. the app's model cache); None loads with
            ``symlora.lab.zoo.load_model`` and keeps one copy per name.
        device: where groups train (``"auto"``: cuda, else mps, else cpu).
        cache_size, cache_ttl_s: how many finished runs are kept for replay, and how long.
        max_runs: most runs training at once (GPU admission also checks free memory).
        load_data: ``(name, seed) -> splits`` for named datasets (e.g. the app's cache).
        stack: share steps between runs (default: on accelerators, not on the CPU, as measured).
        pause_limit_s: a run paused longer is stopped.
        cache_max_params: a finished run whose weights are larger (full fine-tuning of an
            LM) is not kept for replay.
        busy_viewers: on a CPU, with more subscribers than this following runs, train on one
            thread fewer (None: always ``threads``).
        threads: on a CPU, how many threads the training threads compute on (default: what
            ``torch.get_num_threads()`` says in the thread that makes the engine).
    """

    def __init__(self, load_base: Callable[[str], Any] | None = None, device: str = "auto", cache_size: int = 64,
                 cache_ttl_s: float = 900.0, max_runs: int = 64, *, load_data: Callable[[str, int], Any] | None = None,
                 stack: bool | None = None, pause_limit_s: float = 300.0, group_idle_s: float = 30.0,
                 cache_max_params: int = 30_000_000, busy_viewers: int | None = 2, threads: int | None = None) -> None:
        self.device = pick_device(device)
        # Measured (bench/multirun_step.py): on a CPU one concatenated step of K runs costs
        # what K single steps cost, so there each run is its own group (the single-run
        # path, scheduled in turn, still deduplicated); on a GPU the shared step is nearly
        # free per run.
        self.stack = (self.device.type != "cpu") if stack is None else stack
        self.cache_size = cache_size
        self.cache_ttl_s = cache_ttl_s
        self.cache_max_params = cache_max_params
        self.max_runs = max_runs
        self.pause_limit_s = pause_limit_s
        self.group_idle_s = group_idle_s
        self.busy_viewers = busy_viewers
        self.threads = threads or torch.get_num_threads()
        # bf16 products (oneDNN) give the same bits with 1 or 2 threads (measured: a whole
        # digits run); float32 ones (MKL) differ in the last bits (~1e-7 relative), and a
        # run's numbers must not depend on how many pages watched it.
        self._threads_invariant = precision.compute_dtype(self.device) == torch.bfloat16
        self._load_base = load_base
        self._load_data = load_data
        self._bases: dict[str, Any] = {}
        self._lock = threading.Condition()
        self._running: dict[str, _Record] = {}
        self._finished: collections.OrderedDict[str, _Record] = collections.OrderedDict()
        self._pending: collections.deque[tuple[_Record, Any]] = collections.deque()
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._slots: dict[tuple, _GroupSlot] = {}
        self._solo: set[_Record] = set()
        self._turn = 0
        self._closed = False
        self._unique = itertools.count()
        self._threads = [threading.Thread(target=self._prepare_loop, name="symlora-engine-prep", daemon=True),
                         threading.Thread(target=self._step_loop, name="symlora-engine", daemon=True)]
        for t in self._threads:
            t.start()

    # -- the public API --------------------------------------------------------------
    def submit(self, config: RunConfig, *, dataset: ImageSplits | TextSplits | None = None,
               data_key: str | None = None, control: Control | None = None) -> RunHandle:
        """Queue a run (or subscribe to an identical one).  ``dataset`` without ``data_key``
        is never shared."""
        cfg = config
        shareable = dataset is None or data_key is not None
        key = run_key(cfg, data_key=data_key, device=self.device)
        if not shareable:
            key = f"{key}-{next(self._unique)}"
        sub = _Subscriber(control)
        with self._lock:
            if self._closed:
                raise RuntimeError("the engine is closed")
            self._expire()
            record = self._running.get(key)
            if record is not None and not record.closed:
                record.subscribers.append(sub)
                return RunHandle(record, sub, "running")
            record = self._finished.get(key)
            if record is not None:
                self._finished.move_to_end(key)
                record.subscribers.append(sub)
                return RunHandle(record, sub, "finished")
            record = _Record(key, cfg, shareable)
            record.subscribers.append(sub)
            self._running[key] = record
            self._pending.append((record, dataset))
            self._lock.notify_all()
        return RunHandle(record, sub, None)

    def close(self, timeout: float = 10.0) -> None:
        """Stop every run (``stopped`` events) and end the engine's threads, runs that
        train alone included: each stops at its next step boundary.  Call it before the
        process exits — a run still in its backward when the interpreter shuts down aborts
        the process."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._closed = True
            records = list(self._running.values())
            self._lock.notify_all()
        for record in records:
            for sub in record.subscribers:
                sub.cancelled = True
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        while self._solo and time.monotonic() < deadline:
            time.sleep(0.02)

    def stats(self) -> dict[str, Any]:
        """What the engine holds now (for status pages and benchmarks)."""
        with self._lock:
            return {"running": sum(1 for r in self._running.values() if not r.closed),
                    "groups": {str(k[:6]): len(s.group) for k, s in self._slots.items()},
                    "solo": len(self._solo), "waiting": len(self._waiting) + len(self._pending),
                    "cached": len(self._finished)}

    # -- records ------------------------------------------------------------------
    def _expire(self) -> None:
        cutoff = time.monotonic() - self.cache_ttl_s
        for key in [k for k, r in self._finished.items() if (r.finished_at or 0) < cutoff]:
            del self._finished[key]
        while len(self._finished) > self.cache_size:
            self._finished.popitem(last=False)

    def _ended(self, record: _Record) -> None:
        """Move a closed record from running to the finished cache (done runs only)."""
        with self._lock:
            if self._running.get(record.key) is record:
                del self._running[record.key]
            result = record.events[-1].result if record.events else None
            size = sum(t.numel() for t in result.trainable_state.values()) if result is not None else 0
            if record.status == "done" and record.shareable and self.cache_size > 0 and size <= self.cache_max_params:
                self._finished[record.key] = record
                self._expire()

    def _emit_to(self, record: _Record) -> Callable[[TrainEvent], None]:
        def emit(event: TrainEvent) -> None:
            record.add(event)
            if event.is_final:
                self._ended(record)
        return emit

    def _base(self, name: str) -> Any:
        if self._load_base is not None:
            return self._load_base(name)
        if name not in self._bases:
            from .zoo import load_model

            self._bases[name] = load_model(name)
        return self._bases[name]

    # -- preparing runs (data, task, initial tensors) off the training thread ----------
    def _prepare_loop(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._lock.wait()
                if self._closed:
                    pending = list(self._pending)
                    self._pending.clear()
                else:
                    pending = [self._pending.popleft()]
            if self._closed:
                for record, _ in pending:
                    record.fail(RuntimeError("the engine was closed before the run started"))
                    self._ended(record)
                return
            record, dataset = pending[0]
            try:
                self._prepare(record, dataset)
            except Exception as err:  # noqa: BLE001 — the subscribers get it from events()
                log.info("run %s could not start: %s", record.key, err)
                record.fail(err)
                self._ended(record)

    def _prepare(self, record: _Record, dataset: Any) -> None:
        cfg = record.cfg
        base = self._base(cfg.model)
        if dataset is None and self._load_data is not None:
            dataset = self._load_data(cfg.data, cfg.seed)
        why = stackable(base, cfg)
        if why is not None:
            log.info("run %s trains alone: %s", record.key, why)
            thread = threading.Thread(target=self._solo_run, args=(record, base, dataset), daemon=True,
                                      name="symlora-solo-run")
            with self._lock:  # it counts against max_runs like a stacked run: wait for room
                while not self._closed and self._training_count() >= self.max_runs:
                    self._lock.wait(timeout=1.0)
                self._solo.add(record)
            thread.start()
            return
        member = prepare_member(cfg, base, dataset, self.device, self._emit_to(record))
        classes = member.task.classes
        layout = layout_key(cfg, base, classes, self.device)
        with self._lock:
            self._waiting.append(_Waiting(record, member, layout, base))
            self._lock.notify_all()

    # -- runs that train alone -----------------------------------------------------
    def _solo_run(self, record: _Record, base: Any, dataset: Any) -> None:
        message: list[str] = []

        def stop() -> bool:
            while True:
                state, why = record.decide(self.pause_limit_s)
                if state == "run":
                    return False
                if state == "stop" or self._closed:
                    if why:
                        message.append(why)
                    return True
                time.sleep(0.05)

        emit = self._emit_to(record)
        if self.device.type == "cpu":
            compute_on(self.threads)
        try:
            for event in train_run(record.cfg, base=base, dataset=dataset, stop=stop, keep_model=False):
                if event.is_final and message and event.kind == "stopped":
                    event.message = f"stopped: {message[0]}"
                emit(event)
        except Exception as err:  # noqa: BLE001
            record.fail(err)
            self._ended(record)
        finally:
            with self._lock:
                self._solo.discard(record)
                self._lock.notify_all()

    # -- the training thread ----------------------------------------------------------
    def _training_count(self) -> int:
        return sum(len(s.group) for s in self._slots.values()) + len(self._solo)

    def _admit(self) -> None:
        """Let waiting runs join their groups (at this step boundary), while there is
        room; the runs joining one group join together (their first evaluation is shared)."""
        joining: dict[tuple, list[_Waiting]] = {}
        while True:
            with self._lock:
                if not self._waiting or self._training_count() + sum(map(len, joining.values())) >= self.max_runs:
                    break
                item = self._waiting[0]
                slot = self._slots.get(item.layout) if self.stack else None
                if slot is not None and not self._fits(slot):
                    break
                self._waiting.popleft()
            joining.setdefault(item.layout if self.stack else item.layout + (item.record.key,), []).append(item)
        # A run stopped while it has to wait joins at once, to end at the next boundary
        # with a result (0 steps), as a run stopped before its first step does.
        with self._lock:
            queued = list(self._waiting)
        stopped = [item for item in queued if item.record.decide(self.pause_limit_s)[0] == "stop"]
        with self._lock:
            for item in stopped:
                self._waiting.remove(item)
        for item in stopped:
            joining.setdefault(item.layout if self.stack else item.layout + (item.record.key,), []).append(item)
        for layout, items in joining.items():
            slot = self._slots.get(layout)
            try:
                if slot is None:
                    slot = _GroupSlot(Group.for_run(items[0].base, items[0].member, self.device))
                    with self._lock:
                        self._slots[layout] = slot
                slot.group.join_many([item.member for item in items])
                slot.records.extend(item.record for item in items)
                slot.idle_since = None
            except Exception as err:  # noqa: BLE001
                log.exception("runs could not join their group")
                for item in items:
                    item.record.fail(err)
                    self._ended(item.record)
                if slot is not None and len(slot.group) != len(slot.records):  # half joined: start over
                    self._fail_group(slot, err)

    def _fits(self, slot: _GroupSlot) -> bool:
        """GPU admission: the run's measured footprint against free device memory."""
        if self.device.type != "cuda" or not slot.footprint or not len(slot.group):
            return True
        free, _ = torch.cuda.mem_get_info(self.device)
        return free > 1.5 * slot.footprint + (256 << 20)

    def _viewers(self) -> int:
        """Subscribers following runs now (call with the lock held)."""
        return sum(1 for r in self._running.values() if not r.closed for sub in r.subscribers if not sub.cancelled)

    def _set_threads(self) -> None:
        """On a CPU: :attr:`threads` for the training thread, one fewer while many follow runs
        (see the module docstring).  Only the calling thread's count changes."""
        if self.device.type != "cpu":
            return
        want = self.threads
        if self.busy_viewers is not None and want > 1 and self._threads_invariant:
            with self._lock:
                if self._viewers() > self.busy_viewers:
                    want -= 1
        if torch.get_num_threads() != want:
            compute_on(want)
            log.info("training on %d thread(s)%s", want, ": many pages follow runs" if want < self.threads else "")

    def _step_loop(self) -> None:
        while True:
            self._set_threads()  # back to the setting once the audience has gone
            with self._lock:
                while not self._closed and not self._waiting and not any(len(s.group) for s in self._slots.values()):
                    self._drop_idle_groups()
                    self._lock.wait(timeout=1.0)
                closed = self._closed
            if closed:
                self._stop_all()
                return
            try:
                self._admit()
            except Exception:  # noqa: BLE001 — a bug here must not stop every other run
                log.exception("admitting runs failed")
            self._set_threads()
            stepped = self._step_one_group()
            if not stepped:
                time.sleep(0.02)  # every run is paused: don't spin

    def _drop_idle_groups(self) -> None:
        now = time.monotonic()
        for layout, slot in list(self._slots.items()):
            if len(slot.group):
                continue
            slot.idle_since = slot.idle_since or now
            if now - slot.idle_since > self.group_idle_s:
                del self._slots[layout]

    def _step_one_group(self) -> bool:
        """One step of the next group in turn; False when no run took a step."""
        slots = [s for s in self._slots.values() if len(s.group)]
        for i in range(len(slots)):
            slot = slots[(self._turn + i) % len(slots)]
            if self._step(slot):
                self._turn = (self._turn + i + 1) % max(1, len(slots))
                return True
        return False

    def _step(self, slot: _GroupSlot) -> bool:
        try:
            return self._step_group(slot)
        except Exception as err:  # noqa: BLE001 — e.g. CUDA out of memory: these runs end, the engine goes on
            self._fail_group(slot, err)
            return True

    def _step_group(self, slot: _GroupSlot) -> bool:
        group = slot.group
        decisions = [r.decide(self.pause_limit_s) for r in slot.records]
        for row in reversed(range(len(decisions))):
            state, why = decisions[row]
            if state == "stop":
                record = slot.records.pop(row)
                member = group.members[row]
                message = (f"stopped: {why}" if why else
                           f"stopped by request after {member.step} of {member.cfg.steps} steps")
                group.finish(row, "stopped", message)
                self._ended(record)
        for row, record in enumerate(slot.records):  # subscribers who stopped a run others keep
            if record.left:
                member = group.members[row]
                others = sum(1 for s in record.subscribers if not s.cancelled)
                event = group.final_event(row, "stopped", f"stopped by request after {member.step} of "
                                          f"{member.cfg.steps} steps (the run goes on for {others} other viewers)")
                with record.cond:
                    for sub in record.left:
                        sub.final = event
                    record.left.clear()
                    record.cond.notify_all()
        rows = [i for i, (state, _) in enumerate(d for d in decisions if d[0] != "stop") if state == "run"]
        if not rows:
            return False
        before = list(slot.records)
        for r in before:
            r.peers = len(rows) - 1
        members_before = list(group.members)
        group.step(rows)
        if self.device.type == "cuda" and group.peak_bytes and len(group):
            slot.footprint = max(slot.footprint, group.peak_bytes // max(1, len(group)))
        still = {id(m) for m in group.members}
        slot.records = [r for r, m in zip(before, members_before) if id(m) in still]
        return True

    def _fail_group(self, slot: _GroupSlot, err: BaseException) -> None:
        oom = isinstance(err, torch.cuda.OutOfMemoryError)
        log.exception("a group step failed (%d runs end)", len(slot.records))
        for row in reversed(range(len(slot.records))):
            record = slot.records[row]
            try:
                if not oom or record.closed:
                    raise err
                slot.group.finish(row, "error", "the GPU ran out of memory while training with other runs; "
                                                "try again in a minute")
            except Exception:  # noqa: BLE001
                record.fail(err)
            self._ended(record)
        slot.records.clear()
        for layout, s in list(self._slots.items()):
            if s is slot:
                del self._slots[layout]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _stop_all(self) -> None:
        for slot in list(self._slots.values()):
            for row in reversed(range(len(slot.group))):
                try:
                    slot.group.finish(row, "stopped", "stopped: the server is shutting down")
                except Exception as err:  # noqa: BLE001
                    slot.records[row].fail(err)
                self._ended(slot.records[row])
            slot.records.clear()
        self._slots.clear()
        for item in list(self._waiting):
            item.record.fail(RuntimeError("the engine was closed before the run started"))
            self._ended(item.record)
        self._waiting.clear()


__all__ = ["Engine", "RunHandle", "data_key", "run_key"]
