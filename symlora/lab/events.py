"""What a training run tells its watcher: typed events and the final result.

A run is an iterator of :class:`TrainEvent`.  Every event is self-contained (a UI can
draw from any single one), JSON-serialisable through :meth:`TrainEvent.to_dict`, and the
last one (``kind`` in ``done``/``stopped``/``error``) carries the :class:`RunResult`.

Where a run crosses a process boundary (a GPU worker process), :meth:`TrainEvent.to_payload`
and :meth:`TrainEvent.from_payload` carry an event — the final one with its result's
weights — as plain data: declared fields only, never a live model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

EventKind = Literal["start", "step", "eval", "done", "stopped", "error"]
FINAL_KINDS = ("done", "stopped", "error")


@dataclass
class MemoryBreakdown:
    """Bytes used by a training step, split the way people ask about it.

    ``frozen``/``trainable``/``grads``/``optimizer`` are summed from the tensors
    themselves.  ``activations`` is what autograd saved for the backward pass (measured
    with saved-tensor hooks); ``other`` is the measured peak minus all of the above
    (CUDA allocator peak on GPU; on CPU the process's resident-set growth since the run
    started), i.e. temporaries and allocator slack.
    """

    frozen: int = 0
    trainable: int = 0
    grads: int = 0
    optimizer: int = 0
    activations: int = 0
    other: int = 0

    @property
    def total(self) -> int:
        return self.frozen + self.trainable + self.grads + self.optimizer + self.activations + self.other

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self) | {"total": self.total}


class LossSmoother:
    """The smoothed training loss: an exponential moving average with bias correction
    (Adam's), whose window scales with the run — ``total_steps / 8`` steps, between 1
    and 10 — so a 12-step run's line follows its points instead of lagging behind them,
    and a long run still gets a calm line."""

    def __init__(self, total_steps: int, max_window: float = 10.0) -> None:
        window = min(max_window, max(1.0, total_steps / 8))
        self.beta = 1.0 - 1.0 / window
        self._mean = 0.0
        self._weight = 0.0

    def add(self, value: float) -> float:
        """Take one step's loss; return the smoothed value so far."""
        self._mean = self.beta * self._mean + (1.0 - self.beta) * value
        self._weight = self.beta * self._weight + (1.0 - self.beta)
        return self._mean / self._weight


@dataclass
class TrainEvent:
    """One update from a running training job."""

    kind: EventKind
    step: int
    total_steps: int
    method: str
    loss: float | None = None
    smoothed_loss: float | None = None
    lr: float | None = None
    elapsed_s: float = 0.0
    eta_s: float | None = None
    throughput: float | None = None
    throughput_unit: str = "items/s"
    metric_name: str = "accuracy"
    metric: float | None = None
    trainable_params: int = 0
    total_params: int = 0
    memory: MemoryBreakdown = field(default_factory=MemoryBreakdown)
    spectrum: dict[str, list[list[float]]] | None = None
    message: str | None = None
    result: RunResult | None = None

    @property
    def is_final(self) -> bool:
        return self.kind in FINAL_KINDS

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the memory as a dict, the result as its summary."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("memory", "result")}
        d["memory"] = self.memory.to_dict()
        if self.result is not None:
            d["result"] = self.result.summary()
        return d

    def to_payload(self) -> dict[str, Any]:
        """Plain data for another process (picklable; CPU tensors): :meth:`to_dict`, with the
        result's weights, adapter config and classes (see :meth:`RunResult.to_payload`)."""
        d = self.to_dict()
        if self.result is not None:
            d["result"] = self.result.to_payload()
        return d

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> "TrainEvent":
        """The event :meth:`to_payload` wrote (its declared fields only)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"memory", "result"}
        raw = payload.get("result")
        return cls(**{k: v for k, v in payload.items() if k in names}, memory=_memory(payload.get("memory")),
                   result=RunResult.from_payload(raw) if raw is not None else None)


def _memory(d: dict[str, int] | None) -> MemoryBreakdown:
    return MemoryBreakdown(**{k: v for k, v in (d or {}).items() if k != "total"})


@dataclass
class RunResult:
    """What a finished (or stopped) run leaves behind: metrics, history and weights.

    ``trainable_state`` holds CPU tensors only (adapter weights plus any trained head),
    so it can be kept in a web session or written to disk without touching the GPU.
    ``bundle`` is the tuned model itself, only in the process that trained it and only when
    asked for (``train.run(keep_model=True)``); it is never serialised.
    """

    config: dict[str, Any]
    method: str
    metric_name: str
    metric_before: float | None
    metric_after: float | None
    trainable_params: int
    total_params: int
    steps_done: int
    wall_s: float
    step_ms: float | None
    peak_mem_bytes: int
    memory: MemoryBreakdown
    history: list[dict[str, Any]]
    status: Literal["done", "stopped", "error"] = "done"
    message: str | None = None
    trainable_state: dict[str, Any] = field(default_factory=dict, repr=False)
    adapter_config: dict[str, Any] | None = None
    classes: list[str] | None = None
    bundle: Any = field(default=None, repr=False, compare=False)

    def summary(self) -> dict[str, Any]:
        """The scalar facts of the run (no tensors, no history)."""
        return {
            "status": self.status,
            "message": self.message,
            "method": self.method,
            "metric_name": self.metric_name,
            "metric_before": self.metric_before,
            "metric_after": self.metric_after,
            "trainable_params": self.trainable_params,
            "total_params": self.total_params,
            "steps_done": self.steps_done,
            "wall_s": self.wall_s,
            "step_ms": self.step_ms,
            "peak_mem_bytes": self.peak_mem_bytes,
            "memory": self.memory.to_dict(),
            "config": self.config,
        }

    def to_payload(self) -> dict[str, Any]:
        """:meth:`summary` plus the weights (CPU tensors), adapter config and classes."""
        return self.summary() | {
            "trainable_state": {k: v.detach().to("cpu") for k, v in self.trainable_state.items()},
            "adapter_config": self.adapter_config, "classes": self.classes,
        }

    @classmethod
    def from_payload(cls, raw: dict[str, Any]) -> "RunResult":
        """The result :meth:`to_payload` wrote (without its history: the events carry it)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"memory", "history", "bundle"}
        return cls(**{k: v for k, v in raw.items() if k in names}, memory=_memory(raw.get("memory")), history=[])
