"""Many runs in one training step: a shared frozen base, adapters with a run dimension.

K runs that share a frozen base model (same model and input size / tokenizer) and an
adapter layout (method, r, targets, batch size, number of classes) form a :class:`Group`.
Each group step concatenates the K runs' batches along the batch dimension and runs the
frozen base **once** on (K·B, …).  Only the trained parts carry a leading run dimension:

* an adapted layer computes its base output with one GEMM over all K·B rows and the
  adapter term with batched products on (K, B·T, features) views
  (:class:`StackedAdapter`; SymLoRA's block layout comes from
  :func:`symlora.layers.symlora_delta`, the same function a single layer uses);
* a new classifier head is one batched product (:class:`StackedLinear`).

This is exact for models whose frozen layers act per sample (ViT, causal LMs: LayerNorm,
attention and MLP see one sample at a time): run k's loss depends on run k's batch and
adapters only, so the gradient of the summed loss with respect to run k's slice is run
k's own gradient.  Models with BatchNorm in train mode would couple the runs through batch
statistics, and full fine-tuning trains the base itself: :func:`stackable` says no and
they train alone (``symlora.lab.train.run``).

Why this and not ``torch.func.stack_module_state`` + ``vmap(functional_call)``: vmap needs
timm's fused attention turned off (the efficient SDPA backward fails under it) and the
plain adapter formula (the fused autograd node has no batching rule), while the
concatenated batch keeps both and makes every frozen layer one large GEMM.  Measured by
``bench/multirun_step.py`` (digits ViT, SymLoRA r=8, batch 64, one H200, ms per step):
30 runs concatenated 21.8, vmap 24.1, 30 separate steps 473; one run 22.3 / 22.8 / 16.4 —
so a group with one run in a step takes the single-run fused path.  On the CPU (one
thread, CPU time) sharing gains nothing: 8 runs cost 170.7 ms per run concatenated, 169.9
in separate steps, 176.4 with vmap — so ``symlora.lab.engine`` stacks on accelerators only.

Every run keeps what makes it *its* run: its own initialisation (drawn exactly as
``symlora.lab.train.prepare`` draws it), its own seeded data order, its place in its own
warm-up + cosine schedule, its own AdamW state and step count (:class:`StackedAdamW`),
its own evaluation cadence and its own typed events, ending with a :class:`RunResult`
whose ``trainable_state`` and ``adapter_config`` are exactly what ``train.run`` returns.
Runs join at a step boundary and leave at once (their rows are cut out of every stacked
tensor); a NaN loss ends that run alone.  The tensors with a run dimension, their layers
and their optimizer are in :mod:`symlora.lab.stacked`; the scheduler is :mod:`symlora.lab.engine`.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import memory as mem
from . import precision
from ..config import AdapterConfig
from .data import ImageSplits, TextSplits, load_dataset
from .events import MemoryBreakdown, RunResult, TrainEvent
from ..layers import SymLoraLayer
from ..model import adapter_layers, count_parameters
from ..optim import lambda_lr_multiplier
from .stacked import RunRows, StackedAdamW, StackedAdapter, StackedLinear, cut_rank, pad_rank
from .tasks import ImageClassification
from .train import (
    _SEED_LOCK,
    RunConfig,
    _spectrum_lists,
    _state_for_result,
    apply_method,
    divergence_message,
    lr_factor,
    make_task,
)
from .zoo import TextModel, VisionModel

log = logging.getLogger(__name__)

Bundle = VisionModel | TextModel
Emit = Callable[[TrainEvent], None]


# --------------------------------------------------------------------------- what can stack
def stackable(bundle: Bundle, cfg: RunConfig) -> str | None:
    """Why the run must train alone (a sentence), or ``None`` when it can share steps."""
    if cfg.method == "full":
        return "full fine-tuning trains the base itself"
    if cfg.uses_adapter and cfg.adapter.lora_dropout > 0:
        return "adapter dropout's random masks would depend on the other runs"
    if cfg.uses_adapter and cfg.adapter.modules_to_save:
        return "modules_to_save trains whole modules, which the runs of a group share"
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in bundle.model.modules()):
        return "the model has BatchNorm layers, whose batch statistics would mix the runs"
    if any(isinstance(m, nn.Dropout) and m.p > 0 for m in bundle.model.modules()):
        return "the model uses dropout, whose random masks would depend on the other runs"
    return None


def layout_key(cfg: RunConfig, bundle: Bundle, classes: list[str] | None, device: torch.device) -> tuple:
    """Runs with equal keys can share a group: same base, input shape, trained tensors."""
    targets = (cfg.adapter.target_modules if cfg.uses_adapter else None) or bundle.default_targets
    targets = tuple(targets) if isinstance(targets, list) else targets
    size = cfg.image_size or getattr(bundle, "image_size", None)
    return (bundle.name, size, cfg.max_tokens if isinstance(bundle, TextModel) else None, cfg.method,
            targets, cfg.batch_size, len(classes) if classes else None, device.type, device.index,
            precision.compute_dtype(device))


def alias_copy(bundle: Bundle) -> Bundle:
    """A copy of ``bundle`` whose modules are new but whose weights are the base's own
    tensors (wrapped in new, frozen ``Parameter`` objects): cheap, and nothing a caller
    does to the copy's modules or flags reaches the base."""
    memo: dict[int, Any] = {id(p): nn.Parameter(p.data, requires_grad=False) for p in bundle.model.parameters()}
    memo.update({id(b): b for b in bundle.model.buffers()})
    if isinstance(bundle, TextModel):
        memo[id(bundle.tokenizer)] = bundle.tokenizer
    return dataclasses.replace(bundle, model=copy.deepcopy(bundle.model, memo))


def initial_trainables(cfg: RunConfig, base: Bundle, classes: list[str] | None
                       ) -> tuple[Bundle, dict[str, Tensor], AdapterConfig | None]:
    """The run's model as ``train.prepare`` makes it (same seed, same draws), sharing the
    base's frozen weights: (bundle, its trainable tensors by name, adapter config)."""
    bundle = alias_copy(base)
    with _SEED_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if isinstance(bundle, VisionModel):
            bundle.reset_head(list(classes or []), seed=cfg.seed)
        adapter = apply_method(bundle, cfg)
    trainables = {n: p.detach() for n, p in bundle.model.named_parameters() if p.requires_grad}
    return bundle, trainables, adapter


# --------------------------------------------------------------------------- one run in a group
@dataclass
class Member:
    """One run of a group: its config, task, data order, schedule and event history."""

    cfg: RunConfig
    task: Any
    trainables: dict[str, Tensor]
    adapter: AdapterConfig | None
    emit: Emit
    scaling: float = 1.0
    counts: Any = None
    base_event: dict[str, Any] = field(default_factory=dict)
    batches: Iterator[Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    step: int = 0
    metric_before: float | None = None
    metric_after: float | None = None
    smoothed: float | None = None
    last_loss: float | None = None
    step_time: float = 0.0
    items: int = 0
    t0: float = field(default_factory=time.perf_counter)
    train_t0: float = 0.0
    last_emit: float = 0.0
    memory: MemoryBreakdown = field(default_factory=MemoryBreakdown)
    lam_ratio: dict[str, float] = field(default_factory=dict)
    bundle: Any = None  # the run's own model on the CPU, sharing the base's weights
    rank: int = 0  # its adapters' r (0: no adapters)


def prepare_member(cfg: RunConfig, base: Bundle, data: ImageSplits | TextSplits | None, device: torch.device,
                   emit: Emit) -> Member:
    """Everything of a run that does not need its group: data, task, initial tensors.
    ``cfg`` must be resolved."""
    data = data if data is not None else load_dataset(cfg.data, seed=cfg.seed)
    if isinstance(base, VisionModel) != isinstance(data, ImageSplits):
        kind = "images" if isinstance(data, ImageSplits) else "text"
        task = "classifies images" if isinstance(base, VisionModel) else "is a language model"
        raise ValueError(f"model {base.name!r} {task} but data {getattr(data, 'name', '?')!r} is {kind}")
    classes = data.train.classes if isinstance(data, ImageSplits) else None
    if cfg.image_size and isinstance(base, VisionModel) and base.image_size != cfg.image_size:
        if not base.resizable:
            raise ValueError(f"model {base.name!r} takes {base.image_size}×{base.image_size} images only, "
                             f"not image_size={cfg.image_size}")
    bundle, trainables, adapter = initial_trainables(cfg, base, classes)
    if cfg.image_size and isinstance(bundle, VisionModel):
        bundle.image_size = cfg.image_size
    task = make_task(bundle, data, cfg, device)
    lam_ratio = {f"{name}.lora_lambda": lambda_lr_multiplier(layer, cfg.adapter.lambda_lr_ratio)
                 for name, layer in adapter_layers(bundle.model) if isinstance(layer, SymLoraLayer)}
    member = Member(cfg=cfg, task=task, trainables=trainables, adapter=adapter, emit=emit,
                    scaling=adapter.scaling if adapter else 1.0, counts=count_parameters(bundle.model),
                    lam_ratio=lam_ratio, bundle=bundle, rank=adapter.r if adapter else 0)
    member.base_event = dict(total_steps=cfg.steps, method=cfg.method, metric_name=task.metric_name,
                             throughput_unit=task.unit, trainable_params=member.counts.trainable,
                             total_params=member.counts.total)
    return member


# --------------------------------------------------------------------------- the group
class Group:
    """Runs of one layout training together, one :meth:`step` for all of them.

    ``template`` is an ordinary adapted model (the first run's, on ``device``): its
    frozen weights are the group's only copy of the base, and a run's slice is loaded into
    it to evaluate the run, read its spectrum and export its weights — through exactly the
    code ``train.run`` uses.  The stacked model shares the template's frozen modules.
    """

    def __init__(self, template: Bundle, device: torch.device, *, measure_every: int = 0) -> None:
        self.device = device
        self.template = template
        self.model = template.model
        self.rank = template.model.symlora_config.r if hasattr(template.model, "symlora_config") else 0
        self.templates: dict[int, Bundle] = {self.rank: template}  # a model per rank, one frozen base
        self.blocks = {f"{n}.{local}": getattr(layer, "k", 1) for n, layer in adapter_layers(self.model)
                       for local in layer.adapter_parameters()}
        self.head_name = getattr(template, "head_name", None)
        self.store = RunRows()
        self.dtype = precision.compute_dtype(device)
        precision.prepare_model(self.model, device, self.dtype)  # before the stacked copy: it shares the modules' flags
        self.stacked = self._stacked_model(self.model)
        self.stacked.train()
        self.optimizer = StackedAdamW()
        self.members: list[Member] = []
        self.scaling_values: list[float] = []
        self.activations = 0
        self.peak_bytes = 0
        self.measure_every = measure_every
        # Measured on the H200: one run's evaluation through the template costs about as
        # much as a whole group step, so there runs evaluated at the same step share forwards.
        self.batched_eval = device.type == "cuda"
        self._steps = 0
        self.frozen_bytes, _ = mem.parameter_bytes(self.model)
        self.autocast = precision.autocast(device, self.dtype)

    @classmethod
    def for_run(cls, base: Bundle, member: Member, device: torch.device, **kw: Any) -> Group:
        """A new group whose template is a full copy of ``base`` adapted like ``member``."""
        template = copy.deepcopy(base)
        # Its draws are overwritten, but they must not disturb a run being seeded in
        # another thread: the global generator is shared, hence the lock.
        with _SEED_LOCK, torch.random.fork_rng(devices=[]):
            if isinstance(template, VisionModel):
                template.reset_head(list(member.task.classes), seed=member.cfg.seed)
            apply_method(template, member.cfg)
        if isinstance(template, VisionModel) and member.cfg.image_size:
            template.image_size = member.cfg.image_size
        template.model.to(device)
        return cls(template, device, **kw)

    def _stacked_model(self, model: nn.Module) -> nn.Module:
        memo: dict[int, Any] = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
        stacked = copy.deepcopy(model, memo)
        for name, layer in list(adapter_layers(stacked)):
            parent, _, child = name.rpartition(".")
            setattr(stacked.get_submodule(parent), child, StackedAdapter(layer, name, self.store))
        trained_leaves = {n.rsplit(".", 1)[0] for n, p in model.named_parameters()
                          if p.requires_grad and ".lora_" not in n}
        for name in sorted(trained_leaves):
            module = stacked.get_submodule(name)
            if not isinstance(module, nn.Linear):
                raise ValueError(f"cannot stack the trained module {name!r} ({type(module).__name__})")
            parent, _, child = name.rpartition(".")
            target = stacked.get_submodule(parent) if parent else stacked
            setattr(target, child, StackedLinear(name, self.store, module.bias is not None))
        return stacked

    # -- membership -----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.members)

    def join(self, member: Member) -> None:
        """Add ``member`` as the last row and send its ``start`` event (evaluated first)."""
        self.join_many([member])

    def join_many(self, members: list[Member]) -> None:
        """Add ``members`` as the last rows, evaluate them (together where the group
        batches evaluations) and send their ``start`` events."""
        first = len(self.members)
        top = max([self.rank] + [m.rank for m in members])
        if top > self.rank:
            self._pad_to(top)
        for member in members:
            tensors = {n: pad_rank(t.to(self.device), n, self.blocks.get(n, 1), member.rank, self.rank)
                       for n, t in member.trainables.items()}
            member.trainables = {}
            for name, t in tensors.items():
                old = self.store.params.get(name)
                stacked = t.unsqueeze(0) if old is None else torch.cat([old.detach(), t.unsqueeze(0)])
                self.store.params[name] = nn.Parameter(stacked)
            self.optimizer.add_run(tensors)
            self.members.append(member)
            self.scaling_values.append(member.scaling)
        self.store.scaling = torch.tensor(self.scaling_values, device=self.device)
        self.store.scaling_values = self.scaling_values
        rows = list(range(first, len(self.members)))
        metrics, spectra = self._evaluate(rows)
        for row in rows:
            member = self.members[row]
            member.metric_before = member.metric_after = metrics[row]
            member.memory = self._memory(1, member)
            event = TrainEvent("start", 0, elapsed_s=time.perf_counter() - member.t0, metric=member.metric_before,
                               memory=member.memory, spectrum=spectra[row], **member.base_event)
            member.history.append(event.to_dict())
            member.batches = member.task.batches(member.cfg.batch_size,
                                                 torch.Generator().manual_seed(member.cfg.seed))
            member.train_t0 = member.last_emit = time.perf_counter()
            member.emit(event)

    # -- evaluation ---------------------------------------------------------------------
    def _evaluate(self, rows: list[int]) -> tuple[dict[int, float], dict[int, Any]]:
        """Metric and spectrum of the runs at ``rows`` now.  One run at a time through the
        template (``task.evaluate``, exactly as ``train.run``) — or, with
        :attr:`batched_eval` (on a GPU), image runs with equally large test sets in
        stacked forwards, several runs per forward."""
        metrics: dict[int, float] = {}
        snapshot = None
        if self.device.type != "cpu" and rows:
            snapshot = {n: p.detach().cpu() for n, p in self.store.params.items() if ".lora_" in n}
        batchable = [r for r in rows if isinstance(self.members[r].task, ImageClassification)]
        if self.batched_eval and len(batchable) > 1:
            by_size: dict[int, list[int]] = {}
            for r in batchable:
                by_size.setdefault(len(self.members[r].task.test_y), []).append(r)
            for same in by_size.values():
                metrics.update(self._accuracy_together(same))
        spectra: dict[int, Any] = {}
        for r in rows:
            if r not in metrics:
                metrics[r] = self.members[r].task.evaluate(self._load(r))
            spectra[r] = self._spectrum(self.members[r], r, snapshot)
        return metrics, spectra

    @torch.no_grad()
    def _accuracy_together(self, rows: list[int], images: int = 16384) -> dict[int, float]:
        """Test accuracy of several image runs from stacked forwards (no autocast, as
        ``ImageClassification.evaluate``)."""
        tasks = [self.members[r].task for r in rows]
        n = len(tasks[0].test_y)
        correct = [0] * len(rows)
        per = max(1, images // max(1, n))  # runs per forward
        self.stacked.eval()
        try:
            for start in range(0, len(rows), per):
                part = list(range(start, min(len(rows), start + per)))
                self.store.rows = torch.tensor([rows[j] for j in part], device=self.device)
                self.store.row_list = [rows[j] for j in part]
                x = torch.cat([tasks[j].test_x for j in part]).to(self.device)
                pred = self.stacked(x).argmax(-1).view(len(part), n).cpu()
                for i, j in enumerate(part):
                    correct[j] = int((pred[i] == tasks[j].test_y).sum())
        finally:
            self.store.rows = None
            self.store.row_list = None
            self.stacked.train()
        return {r: correct[j] / n for j, r in enumerate(rows)}

    def leave(self, rows: list[int]) -> None:
        """Cut the runs at ``rows`` out of every stacked tensor and the optimizer."""
        gone = set(rows)
        keep = [i for i in range(len(self.members)) if i not in gone]
        idx = torch.tensor(keep, dtype=torch.long, device=self.device)
        for name, p in self.store.params.items():
            self.store.params[name] = nn.Parameter(p.detach().index_select(0, idx))
        self.optimizer.keep_rows(idx)
        self.members = [self.members[i] for i in keep]
        self.scaling_values = [self.scaling_values[i] for i in keep]
        self.store.scaling = torch.tensor(self.scaling_values, device=self.device) if keep else None
        self.store.scaling_values = self.scaling_values
        if not keep:
            self.store.params = {}

    def finish(self, row: int, kind: str, message: str | None = None) -> None:
        """End the run at ``row`` (``done``, ``stopped`` or ``error``) and let it leave."""
        member = self.members[row]
        if kind == "stopped" and member.step > 0:
            member.metric_after = self._evaluate([row])[0][row]
        self._final(row, kind, message)
        self.leave([row])

    # -- a run's view through the template -------------------------------------------
    @torch.no_grad()
    def _load(self, row: int) -> nn.Module:
        """Copy run ``row``'s tensors into the template of its rank (and its adapter
        scaling); returns that model."""
        member = self.members[row]
        model = self._template(member.rank).model
        params = dict(model.named_parameters())
        for name, p in self.store.params.items():
            params[name].copy_(cut_rank(p[row], name, self.blocks.get(name, 1), self.rank, member.rank))
        for _, layer in adapter_layers(model):
            layer.scaling = self.scaling_values[row]
        return model

    def _template(self, rank: int) -> Bundle:
        """The template of rank ``rank``: the first one's modules and frozen weights, with
        adapters of that rank (made on first use)."""
        if rank not in self.templates:
            bundle = alias_copy(self.template)
            model = bundle.model
            config = dataclasses.replace(model.symlora_config, r=rank)
            from ..layers import ADAPTERS

            with _SEED_LOCK, torch.random.fork_rng(devices=[]):  # its draws are overwritten
                for name, layer in list(adapter_layers(model)):
                    parent, _, child = name.rpartition(".")
                    setattr(model.get_submodule(parent) if parent else model, child,
                            ADAPTERS[config.method](layer.base_layer, config))
            model.symlora_config = config
            self.templates[rank] = bundle
        return self.templates[rank]

    @torch.no_grad()
    def _pad_to(self, rank: int) -> None:
        """Zero-pad every run's adapter tensors and AdamW moments to ``rank``."""
        for name in list(self.store.params):
            k = self.blocks.get(name, 1)
            self.store.params[name] = nn.Parameter(pad_rank(self.store.params[name].detach(), name, k, self.rank, rank))
            for state in (self.optimizer.exp_avg, self.optimizer.exp_avg_sq):
                if name in state:
                    state[name] = pad_rank(state[name], name, k, self.rank, rank)
        self.rank = rank

    def _spectrum(self, member: Member, row: int, snapshot: dict[str, Tensor] | None = None
                  ) -> dict[str, list[list[float]]] | None:
        """The spectrum of run ``row``.  On the CPU from the template (``row`` loaded); on
        a GPU from a CPU copy of its adapter (``snapshot``: every run's adapter tensors,
        copied once): tiny QR / eigenvalue problems are launch-bound on a GPU."""
        if member.adapter is None:
            return None
        if self.device.type == "cpu" or member.bundle is None:
            return _spectrum_lists(self._load(row))
        cpu_params = dict(member.bundle.model.named_parameters())
        with torch.no_grad():
            for name, p in self.store.params.items():
                if ".lora_" in name:
                    t = snapshot[name][row] if snapshot is not None else p[row].detach().cpu()
                    cpu_params[name].copy_(cut_rank(t, name, self.blocks.get(name, 1), self.rank, member.rank))
        return _spectrum_lists(member.bundle.model)

    def _memory(self, runs: int, member: Member) -> MemoryBreakdown:
        """One run's share: the base counted in full (it is what the run uses), its own
        tensors, gradients and optimizer state, and its share of the step's activations."""
        member_bytes = member.counts.trainable * 4  # fp32 trainables
        parts = self.frozen_bytes + 4 * member_bytes + self.activations // max(1, runs)
        other = max(0, self.peak_bytes // max(1, runs) - parts) if self.peak_bytes else 0
        return MemoryBreakdown(self.frozen_bytes, member_bytes, member_bytes, 2 * member_bytes,
                               self.activations // max(1, runs), other)

    def final_event(self, row: int, kind: str, message: str | None = None) -> TrainEvent:
        """The final event run ``row`` would end with now (its result included), without
        ending it: for a subscriber who leaves a run that others keep training."""
        member = self.members[row]
        model = self._load(row)
        cfg = member.cfg
        wall = time.perf_counter() - member.t0
        result = RunResult(
            config=cfg.to_dict(), method=cfg.method, metric_name=member.task.metric_name,
            metric_before=member.metric_before, metric_after=member.metric_after,
            trainable_params=member.counts.trainable, total_params=member.counts.total, steps_done=member.step,
            wall_s=wall, step_ms=1000 * member.step_time / member.step if member.step else None,
            peak_mem_bytes=member.memory.total, memory=member.memory, history=list(member.history),
            status=kind, message=message,  # type: ignore[arg-type]
            trainable_state=_state_for_result(model, member.adapter),
            adapter_config=member.adapter.to_dict() if member.adapter else None, classes=member.task.classes,
        )
        last_loss = member.history[-1].get("loss") if member.history else None
        return TrainEvent(kind, member.step, elapsed_s=wall, loss=last_loss,  # type: ignore[arg-type]
                          smoothed_loss=member.smoothed, metric=member.metric_after, memory=member.memory,
                          message=message, result=result, spectrum=self._spectrum(member, row), **member.base_event)

    def _final(self, row: int, kind: str, message: str | None) -> None:
        member = self.members[row]
        event = self.final_event(row, kind, message)
        member.history.append(event.to_dict() | {"result": None})
        event.result.history = member.history  # type: ignore[union-attr]
        member.emit(event)

    # -- one step for the runs at ``rows`` --------------------------------------------
    def _losses(self, batches: list[Any]) -> Tensor:
        """Each run's mean loss on its own batch, shape (K,), from one forward."""
        task = self.members[0].task
        runs = len(batches)
        if isinstance(task, ImageClassification):
            x = torch.cat([b[0] for b in batches])
            y = torch.cat([b[1] for b in batches])
            logits = self.stacked(x).float()
            return F.cross_entropy(logits, y, reduction="none").view(runs, -1).mean(1)
        ids = torch.cat([b["input_ids"] for b in batches])
        mask = torch.cat([b["attention_mask"] for b in batches])
        labels = torch.cat([b["labels"] for b in batches])
        logits = self.stacked(input_ids=ids, attention_mask=mask).logits.float()
        shift = labels[:, 1:]
        nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), shift.reshape(-1),
                              ignore_index=-100, reduction="none").view(runs, -1)
        counts = (shift != -100).view(runs, -1).sum(1)
        return nll.sum(1) / counts

    def step(self, rows: list[int] | None = None) -> None:
        """One AdamW step for the runs at ``rows`` (all by default); emits their events,
        evaluates those at an evaluation point and ends those that are done or diverged."""
        rows = list(range(len(self.members))) if rows is None else sorted(rows)
        if not rows:
            return
        tick = time.perf_counter()
        everyone = len(rows) == len(self.members)
        self.store.rows = None if everyone else torch.tensor(rows, device=self.device)
        self.store.row_list = None if everyone else rows
        members = [self.members[i] for i in rows]
        batches = [next(m.batches) for m in members]  # type: ignore[arg-type]
        measure = self._steps == 0 or (self.measure_every and self._steps % self.measure_every == 0)
        meter = mem.ActivationMeter(self.stacked) if measure else None
        if measure and self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        try:
            with (meter.measure() if meter else _nullcontext()), self.autocast:
                losses = self._losses(batches)
            values = losses.detach().tolist()
            good = [j for j, v in enumerate(values) if math.isfinite(v)]
            bad = [j for j, v in enumerate(values) if not math.isfinite(v)]
            for j in bad:  # ends with the weights it had before this step, as train.run does
                member = members[j]
                self._final(rows[j], "error", divergence_message(member.cfg, values[j], member.step + 1))
            if good:
                total = losses[good].sum() if bad else losses.sum()
                total.backward()
                good_rows = [rows[j] for j in good]
                lrs, wds = self._factors([self.members[i] for i in good_rows])
                self.optimizer.step(self.store.params, good_rows, lrs, wds)
        finally:
            for p in self.store.params.values():
                p.grad = None
            self.store.rows = None
            self.store.row_list = None
        if meter is not None:
            self.activations = meter.bytes * len(self.members) // max(1, len(rows))
            if self.device.type == "cuda":
                self.peak_bytes = torch.cuda.max_memory_allocated(self.device) * len(self.members) // max(1, len(rows))
        self._steps += 1
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - tick
        ending: list[tuple[int, str]] = [(rows[j], "") for j in bad]
        due = [rows[j] for j in good if (members[j].step + 1) % members[j].cfg.eval_every == 0
               or members[j].step + 1 == members[j].cfg.steps]
        metrics, spectra = self._evaluate(due) if due else ({}, {})
        for j in good:
            member = members[j]
            self._after_step(rows[j], member, values[j], batches[j], elapsed, metrics.get(rows[j]),
                             spectra.get(rows[j]))
            if member.step >= member.cfg.steps:
                ending.append((rows[j], "done"))
        for row, kind in ending:
            if kind == "done":
                self._final(row, "done", None)
        if ending:
            self.leave([row for row, _ in ending])

    def _factors(self, members: list[Member]) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
        lrs: dict[str, list[float]] = {}
        wds: dict[str, list[float]] = {}
        for name in self.store.params:
            lam = name.endswith(".lora_lambda")
            lrs[name] = [m.cfg.lr * lr_factor(m.step, m.cfg.steps, m.cfg.warmup_frac) * (m.lam_ratio.get(name, 1.0) if lam else 1.0)
                         for m in members]
            wds[name] = [0.0 if lam else m.cfg.weight_decay for m in members]
        return lrs, wds

    def _after_step(self, row: int, member: Member, loss: float, batch: Any, elapsed: float,
                    metric: float | None, spectrum: Any) -> None:
        cfg = member.cfg
        lr_now = cfg.lr * lr_factor(member.step, cfg.steps, cfg.warmup_frac)
        member.step += 1
        member.step_time += elapsed
        items = member.task.batch_items(batch)
        member.items += int(items)  # a device tensor for text: the step has synced already
        member.smoothed = loss if member.smoothed is None else 0.9 * member.smoothed + 0.1 * loss
        member.last_loss = loss
        member.memory = self._memory(len(self.members), member)
        step = member.step
        evaluate = step % cfg.eval_every == 0 or step == cfg.steps
        now = time.perf_counter()
        if not (evaluate or step % cfg.emit_every == 0 or now - member.last_emit >= cfg.emit_interval_s):
            return
        if evaluate:
            member.metric_after = metric
        now = time.perf_counter()
        event = TrainEvent(
            "eval" if evaluate else "step", step, loss=loss, smoothed_loss=member.smoothed, lr=lr_now,
            elapsed_s=now - member.t0, eta_s=(now - member.train_t0) / step * (cfg.steps - step),
            throughput=member.items / max(member.step_time, 1e-9), metric=metric, memory=member.memory,
            spectrum=spectrum, **member.base_event,
        )
        member.history.append(event.to_dict())
        member.last_emit = time.perf_counter()
        member.emit(event)


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def train_together(configs: list[RunConfig], base: Bundle, *, datasets: list[Any] | None = None,
                   device: str | torch.device = "auto") -> list[list[TrainEvent]]:
    """Train ``configs`` (one layout) in one group to the end; each run's events.

    The simple synchronous use (tests, benchmarks): every run joins before the first step.
    """
    from .train import pick_device

    device = pick_device(device) if isinstance(device, str) else device
    events: list[list[TrainEvent]] = [[] for _ in configs]
    members = []
    for i, cfg in enumerate(configs):
        data = datasets[i] if datasets else None
        members.append(prepare_member(cfg, base, data, device, events[i].append))
    group = Group.for_run(base, members[0], device)
    for m in members:
        group.join(m)
    while len(group):
        group.step()
    return events
