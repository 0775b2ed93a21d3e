"""The training engine: one loop for every method, streamed as typed events.

    for event in symlora.lab.train.run(RunConfig.from_preset("digits", method="symlora")):
        print(event.step, event.loss, event.metric)

The story of a run: a resolved config (:mod:`symlora.lab.runconfig`) → load (or copy) the
pretrained model → put on the method's trainable parts (SymLoRA / LoRA adapters, a head, or
everything) → draw seeded batches → AdamW steps with warm-up and cosine decay → events
at a steady cadence, evaluation before, during and after → a :class:`RunResult`.

The loop never raises for run-time trouble: a NaN loss, CUDA out-of-memory or a stop
request end the iterator with an ``error``/``stopped`` event carrying the partial result.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from . import distributed
from . import memory as mem
from . import precision
from ..config import AdapterConfig
from .data import ImageSplits, TextSplits, TopicSplits, load_dataset
from .events import LossSmoother, MemoryBreakdown, RunResult, TrainEvent
from ..io import adapter_state_dict
from ..model import count_parameters, inject
from ..optim import param_groups
from .runconfig import LIMITS, TRAIN_METHODS, RunConfig
from ..spectrum import spectrum
from .tasks import ImageClassification, LanguageModeling, TextClassification
from .zoo import EncoderClassifier, TextModel, VisionModel, load_model

log = logging.getLogger(__name__)

__all__ = ["LIMITS", "TRAIN_METHODS", "RunConfig", "apply_method", "pick_device", "prepare", "run", "train"]
# Seeding touches torch's global RNG (head and adapter init); runs in other threads must
# not interleave with it, or the same seed would not give the same run.
_SEED_LOCK = threading.Lock()


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` → cuda if present, else mps, else cpu; anything else is taken as given."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available")
    return device


def _head_name(bundle: VisionModel | TextModel) -> str | None:
    return getattr(bundle, "head_name", None)


def applied_adapter(bundle: VisionModel | TextModel, cfg: RunConfig) -> AdapterConfig:
    """``cfg.adapter`` as it goes on ``bundle``: the model's default targets where it names
    none, and the new head (if any) saved with the adapter's own ``modules_to_save``."""
    head = _head_name(bundle)
    saved = [*(cfg.adapter.modules_to_save or []), *([head] if head else [])]
    adapter = copy.copy(cfg.adapter)  # a copy with two fields filled in: the values were validated already
    adapter.target_modules = cfg.adapter.target_modules or bundle.default_targets
    adapter.modules_to_save = list(dict.fromkeys(saved)) or None
    return adapter


def apply_method(bundle: VisionModel | TextModel, cfg: RunConfig) -> AdapterConfig | None:
    """Make the method's parameters trainable on ``bundle.model`` (in place); returns the
    adapter put on (None for head-only and full runs)."""
    model, head = bundle.model, _head_name(bundle)
    if cfg.uses_adapter:
        adapter = applied_adapter(bundle, cfg)
        inject(model, adapter)
        return adapter
    if cfg.method == "head-only":
        if head is None:
            raise ValueError("head-only training needs a classifier head; this model has none (use lora/symlora)")
        model.requires_grad_(False)
        model.get_submodule(head).requires_grad_(True)
    else:  # full
        model.requires_grad_(True)
    return None


def lr_factor(step: int, total: int, warmup_frac: float) -> float:
    """Linear warm-up, then cosine decay to 10 % of the peak."""
    warm = max(1, int(total * warmup_frac))
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _state_for_result(model: nn.Module, adapter: AdapterConfig | None) -> dict[str, torch.Tensor]:
    if adapter is not None:
        state = adapter_state_dict(model)
    else:
        state = {n: p for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def _spectrum_lists(model: nn.Module) -> dict[str, list[list[float]]] | None:
    """Each adapted layer's spectrum as lists (for events); ``None`` when the adapter holds
    NaN or inf — a diverged run has no spectrum to show, and the eigenvalue solvers refuse
    such input on a GPU (which would end every run stacked with this one)."""
    trained = [p for p in model.parameters() if p.requires_grad]
    if not all(bool(torch.isfinite(p).all()) for p in trained):
        return None
    try:
        return {name: values.tolist() for name, values in spectrum(model).items()}
    except torch.linalg.LinAlgError:  # finite but astronomically large: a run diverging
        return None


def check_data(bundle: VisionModel | TextModel | EncoderClassifier, data: Any) -> None:
    """A one-line ``ValueError`` when ``data`` is not the kind ``bundle`` learns from."""
    if isinstance(bundle, VisionModel):
        if not isinstance(data, ImageSplits):
            raise ValueError(f"model {bundle.name!r} classifies images but data {getattr(data, 'name', '?')!r} is text")
    elif isinstance(bundle, EncoderClassifier):
        if not isinstance(data, TopicSplits):
            raise ValueError(f"model {bundle.name!r} classifies texts but data {getattr(data, 'name', '?')!r} is not labelled texts")
    elif not isinstance(data, TextSplits):
        raise ValueError(f"model {bundle.name!r} is a language model but data {getattr(data, 'name', '?')!r} is images")


def make_task(bundle: VisionModel | TextModel | EncoderClassifier, data: Any, cfg: RunConfig,
              device: torch.device) -> ImageClassification | TextClassification | LanguageModeling:
    """The run's task on ``data``: its batches, its loss and its metric (evaluations in the
    run's dtype, :func:`symlora.lab.precision.evaluation_dtype`)."""
    check_data(bundle, data)
    if isinstance(bundle, VisionModel):
        return ImageClassification(bundle, data, device, eval_limit=cfg.eval_size or 2000,
                                   dtype=precision.evaluation_dtype(device))
    if isinstance(bundle, EncoderClassifier):
        return TextClassification(bundle, data, device, max_tokens=cfg.max_tokens or 64, eval_limit=cfg.eval_size or 2000)
    return LanguageModeling(bundle, data, device, max_tokens=cfg.max_tokens or 64, eval_limit=cfg.eval_size or 64,
                            dtype=precision.evaluation_dtype(device))


def prepare(
    cfg: RunConfig,
    base: VisionModel | TextModel | None = None,
    dataset: ImageSplits | TextSplits | None = None,
    device: torch.device | None = None,
) -> tuple[VisionModel | TextModel, Any, AdapterConfig | None]:
    """Build the run's own model copy and task.  ``base`` (never modified) is copied;
    without it the model is loaded.  ``dataset`` overrides the config's data by name."""
    device = device or pick_device(cfg.device)
    data = dataset if dataset is not None else load_dataset(cfg.data, seed=cfg.seed)
    options = {"image_size": cfg.image_size} if cfg.image_size else {}
    bundle = copy.deepcopy(base) if base is not None else load_model(cfg.model, **options)
    if cfg.image_size and isinstance(bundle, VisionModel) and bundle.image_size != cfg.image_size:
        if not bundle.resizable:
            raise ValueError(f"model {bundle.name!r} takes {bundle.image_size}×{bundle.image_size} images only, "
                             f"not image_size={cfg.image_size}")
        bundle.image_size = cfg.image_size  # a CNN: the shared base loaded at another size is fine
    with _SEED_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        check_data(bundle, data)
        if isinstance(bundle, (VisionModel, EncoderClassifier)):
            bundle.reset_head(data.train.classes, seed=cfg.seed)
        task = make_task(bundle, data, cfg, device)
        adapter = apply_method(bundle, cfg)
    bundle.model.to(device)
    precision.prepare_model(bundle.model, device, precision.compute_dtype(device))
    return bundle, task, adapter


StopFlag = Callable[[], bool] | threading.Event | None


def _should_stop(stop: StopFlag) -> bool:
    if stop is None:
        return False
    return stop.is_set() if isinstance(stop, threading.Event) else bool(stop())


def make_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters (Λ with its own learning rate, see :mod:`symlora.optim`);
    each group's peak learning rate is kept as ``group["peak_lr"]`` for :func:`set_lr`."""
    groups = param_groups(model, cfg.lr, lambda_lr_ratio=cfg.adapter.lambda_lr_ratio, weight_decay=cfg.weight_decay)
    optimizer = torch.optim.AdamW(groups)
    for group in optimizer.param_groups:
        group["peak_lr"] = group["lr"]
    return optimizer


def set_lr(optimizer: torch.optim.Optimizer, step: int, cfg: RunConfig) -> None:
    """Put every group at its peak learning rate times :func:`lr_factor` for ``step``."""
    factor = lr_factor(step, cfg.steps, cfg.warmup_frac)
    for group in optimizer.param_groups:
        group["lr"] = group["peak_lr"] * factor


def divergence_message(cfg: RunConfig, value: float, step: int) -> str:
    """The error of a run whose loss became ``value`` (nan/inf) at ``step`` (1-based)."""
    smaller = f" or lora_alpha (now {cfg.adapter.lora_alpha:g})" if cfg.uses_adapter else ""
    return (f"the loss became {value} at step {step}: training diverged. "
            f"Try a smaller learning rate (e.g. lr={cfg.lr / 10:g}){smaller}.")


@dataclass
class LossLog:
    """The training losses, kept on the device and read only when an event is due.

    Reading a loss (``float(loss)``) waits for the device to finish the step; doing that
    once per event instead of once per step keeps a GPU fed.  Losses are folded in step
    order, so ``last`` and ``smoothed`` (``smoother``'s moving average, whose window
    scales with the run: :class:`~symlora.lab.events.LossSmoother`) are the same numbers a
    per-step read gives; the first non-finite one is reported with its step.
    """

    last: float | None = None
    smoothed: float | None = None
    steps_read: int = 0
    pending: list[torch.Tensor] = field(default_factory=list)
    smoother: LossSmoother | None = None  # None: a plain 0.9 moving average

    def add(self, loss: torch.Tensor) -> None:
        self.pending.append(loss.detach())

    def read(self) -> tuple[int, float] | None:
        """Fold the pending losses in; ``(step, value)`` of the first non-finite one, else None."""
        if not self.pending:
            return None
        values = torch.stack(self.pending).tolist()  # the one device sync
        self.pending.clear()
        for value in values:
            self.steps_read += 1
            if not math.isfinite(value):
                return self.steps_read, value
            self.last = value
            if self.smoother is not None:
                self.smoothed = self.smoother.add(value)
            else:
                self.smoothed = value if self.smoothed is None else 0.9 * self.smoothed + 0.1 * value
        return None


def run(
    config: RunConfig,
    *,
    base: VisionModel | TextModel | None = None,
    dataset: ImageSplits | TextSplits | None = None,
    stop: StopFlag = None,
    keep_model: bool = True,
) -> Iterator[TrainEvent]:
    """Train and yield :class:`TrainEvent` s; the last one carries the :class:`RunResult`.

    Per step the loop does only the step itself; the rest is paid when it is shown: the
    loss is read (one device sync) when an event is due, the memory breakdown (saved-tensor
    hooks) is measured on the first step, spectra and evaluations come at evaluation points.
    A non-finite loss is therefore noticed at the next event (at most ``emit_every`` steps
    later): the error event names the step where it happened and counts only the steps
    before it; the result's weights are those of the step where it was noticed (a diverged
    run's weights are not for use).

    Args:
        config: the run (resolved: see :class:`~symlora.lab.runconfig.RunConfig`).
        base: an already-loaded pretrained model to copy (saves loading time); untouched.
        dataset: data to use instead of ``config.data`` (an upload, pasted text).
        stop: a ``threading.Event`` or callable; checked before every step.
        keep_model: put the trained bundle on the result as ``result.bundle``
            (for predictions) — pass False to drop it and free memory early.
    """
    cfg = config
    device = pick_device(cfg.device)
    t0 = time.perf_counter()
    bundle, task, adapter = prepare(cfg, base, dataset, device)
    model = bundle.model
    counts = count_parameters(model)
    info = dict(total_steps=cfg.steps, method=cfg.method, metric_name=task.metric_name,
                throughput_unit=task.unit, trainable_params=counts.trainable, total_params=counts.total)
    autocast = precision.autocast(device, precision.compute_dtype(device))  # bf16 on CUDA and native-bf16 CPUs
    spectra = (lambda: _spectrum_lists(model)) if adapter is not None else (lambda: None)

    rank, world = distributed.rank_and_world()
    trainer = distributed.wrap(model, device) if world > 1 else model
    optimizer = make_optimizer(model, cfg)
    meter = mem.ActivationMeter(model)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss0, weights = mem.process_rss_bytes(), sum(mem.parameter_bytes(model))

    def measured_peak() -> int:
        if device.type == "cuda":
            return torch.cuda.max_memory_allocated(device)
        return weights + max(0, mem.process_rss_bytes() - rss0)

    history: list[dict[str, Any]] = []
    metric_before = task.evaluate(model)
    metric_after: float | None = metric_before
    memory = MemoryBreakdown(*mem.parameter_bytes(model))
    start_event = TrainEvent("start", 0, elapsed_s=time.perf_counter() - t0, metric=metric_before, memory=memory,
                             spectrum=spectra(), **info)
    history.append(start_event.to_dict())
    yield start_event

    generator = torch.Generator().manual_seed(cfg.seed + 100_003 * rank)  # each rank its own shard
    batches = task.batches(cfg.batch_size, generator)
    losses = LossLog(smoother=LossSmoother(cfg.steps))
    train_t0 = since = last_emit = time.perf_counter()
    step_time, items = 0.0, 0
    status, message = "done", None
    step = 0
    model.train()

    def finish(kind: str) -> TrainEvent:
        wall = time.perf_counter() - t0
        result = RunResult(
            config=cfg.to_dict(), method=cfg.method, metric_name=task.metric_name, metric_before=metric_before,
            metric_after=metric_after, trainable_params=counts.trainable, total_params=counts.total,
            steps_done=step, wall_s=wall, step_ms=1000 * step_time / step if step else None,
            peak_mem_bytes=memory.total, memory=memory, history=history, status=status, message=message,
            trainable_state=_state_for_result(model, adapter),
            adapter_config=adapter.to_dict() if adapter else None, classes=task.classes,
        )
        if keep_model:
            model.eval()
            result.bundle = bundle
        event = TrainEvent(kind, step, elapsed_s=wall, loss=losses.last, smoothed_loss=losses.smoothed,
                           metric=metric_after, memory=memory, message=message, result=result,
                           spectrum=spectra() if kind != "error" else None, **info)
        history.append(event.to_dict() | {"result": None})
        return event

    try:
        while step < cfg.steps:
            if _should_stop(stop):
                status, message = "stopped", f"stopped by request after {step} of {cfg.steps} steps"
                break
            set_lr(optimizer, step, cfg)
            batch = next(batches)
            with meter.measure() if step == 0 else contextlib.nullcontext(), autocast:
                loss = task.loss(trainer, batch)
            loss.backward()
            optimizer.step()
            if step == 0:  # the parts are the same every step: measure them once
                memory = mem.breakdown(model, optimizer, meter.bytes, measured_peak())
            optimizer.zero_grad(set_to_none=True)
            losses.add(loss)
            items += task.batch_items(batch)
            step += 1
            evaluate = step % cfg.eval_every == 0 or step == cfg.steps
            if not (evaluate or step % cfg.emit_every == 0 or time.perf_counter() - last_emit >= cfg.emit_interval_s):
                continue
            diverged = losses.read()
            step_time += time.perf_counter() - since
            if diverged is not None:
                step = diverged[0] - 1
                status, message = "error", divergence_message(cfg, diverged[1], diverged[0])
                break
            metric = task.evaluate(model) if evaluate else None
            if metric is not None:
                metric_after = metric
            now = time.perf_counter()
            event = TrainEvent(
                "eval" if evaluate else "step", step, loss=losses.last, smoothed_loss=losses.smoothed,
                lr=optimizer.param_groups[0]["lr"], elapsed_s=now - t0,
                eta_s=(now - train_t0) / step * (cfg.steps - step), throughput=float(items) / max(step_time, 1e-9),
                metric=metric, memory=memory, spectrum=spectra() if evaluate else None, **info,
            )
            history.append(event.to_dict())
            yield event
            since = last_emit = time.perf_counter()
    except torch.cuda.OutOfMemoryError:
        status = "error"
        message = (f"the GPU ran out of memory at step {step + 1}. Try a smaller batch size "
                   f"(now {cfg.batch_size}) or rank.")
        optimizer.zero_grad(set_to_none=True)
        gc.collect()
        torch.cuda.empty_cache()
    if status == "stopped":
        step_time += time.perf_counter() - since
        diverged = losses.read()
        if diverged is not None:
            step = diverged[0] - 1
            status, message = "error", divergence_message(cfg, diverged[1], diverged[0])
        elif step > 0:
            metric_after = task.evaluate(model)
    if status != "done":
        log.info("run ended (%s): %s", status, message)
    yield finish(status)


def train(config: RunConfig, **kwargs: Any) -> RunResult:
    """Run to the end and return the result (the non-streaming convenience)."""
    final = None
    for event in run(config, **kwargs):
        final = event
    assert final is not None and final.result is not None
    return final.result
