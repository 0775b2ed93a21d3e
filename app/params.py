"""Parameter counts before training: which layers can be adapted, and what it costs.

Counts are exact and cheap: the targets are resolved on the loaded base model by the core
(``symlora.model.resolve_targets``, which only reads), then each layer's adapter size comes
from its shape through :class:`symlora.blocks.BlockLayout`: ``r·(in + out)`` for LoRA
(``2·n·r`` when square) and ``k·(n·r + r)`` for SymLoRA (k square blocks of side n).
No model is copied.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from torch import nn

from symlora import AdapterConfig
from symlora.blocks import BlockLayout, rank_for_budget
from symlora.layers import layer_shape
from symlora.model import eligible_modules, resolve_targets


@dataclass
class LayerKind:
    """All adaptable layers of one kind (``attn.qkv``, ``self_attn.q_proj``, ...)."""

    suffix: str
    count: int
    shapes: list[tuple[int, int]]
    symmetric: bool  # every layer of this kind has square blocks (SymLoRA can adapt it)

    def describe(self) -> str:
        shapes = sorted(set(self.shapes))
        shape = ", ".join(f"{i}→{o}" for i, o in shapes[:2]) + ("…" if len(shapes) > 2 else "")
        blocks = ""
        if self.symmetric and len(shapes) == 1:
            k = BlockLayout(*shapes[0]).k
            blocks = "" if k == 1 else f", {k} blocks"
        return f"{self.suffix} ×{self.count} ({shape}{blocks})"


def kind_of(path: str) -> str:
    """The name a layer shares with its siblings in other blocks: the part after the last
    numeric component (``blocks.3.attn.qkv`` → ``attn.qkv``), else the whole path."""
    parts = path.split(".")
    for i in range(len(parts) - 1, -1, -1):
        if parts[i].isdigit():
            return ".".join(parts[i + 1:]) or path
    return path


def layer_kinds(model: nn.Module, exclude: tuple[str, ...] = ()) -> list[LayerKind]:
    """Adaptable layers grouped by :func:`kind_of`, in model order (``exclude``: kinds to
    leave out, e.g. a classifier head the run replaces)."""
    groups: OrderedDict[str, list[tuple[int, int]]] = OrderedDict()
    for name in eligible_modules(model, "lora"):
        suffix = kind_of(name)
        if suffix in exclude or name in exclude:
            continue
        groups.setdefault(suffix, []).append(layer_shape(model.get_submodule(name)))
    return [LayerKind(s, len(shapes), shapes, all(BlockLayout(*sh).symmetric for sh in shapes))
            for s, shapes in groups.items()]


def kinds_for(model: nn.Module, spec: list[str] | str | None, method: str = "lora") -> list[str]:
    """The layer kinds a ``target_modules`` spec (names, regex or ``all-linear``) selects."""
    if not spec:
        return []
    try:
        paths = resolve_targets(model, AdapterConfig(method=method, target_modules=spec))
    except ValueError:
        return []
    return list(OrderedDict.fromkeys(kind_of(p) for p in paths))


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@dataclass
class Estimate:
    """Trainable and total parameters of a run before it starts."""

    method: str
    trainable: int
    total: int
    adapter: int = 0           # adapter weights alone
    head: int = 0              # a newly trained head (vision)
    layers: list[tuple[str, tuple[int, int], int]] = field(default_factory=list)  # (path, shape, weights)

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / self.total if self.total else 0.0


def estimate(model: nn.Module, method: str, r: int, targets: list[str] | str | None, *,
             head_name: str | None = None, n_classes: int | None = None) -> Estimate:
    """Exact counts for ``method`` at rank ``r`` on ``targets`` of ``model``.

    ``head_name``/``n_classes``: a vision head that the run replaces with an ``n_classes``
    one and trains fully (as the engine does).  Raises ``ValueError`` (the core's message)
    when the targets match nothing or do not fit SymLoRA.
    """
    base_total = _numel(model)
    head = 0
    if head_name and n_classes:
        old = model.get_submodule(head_name)
        features = getattr(old, "in_features", None)
        head = features * n_classes + (n_classes if getattr(old, "bias", None) is not None else 0) if features else _numel(old)
        base_total += head - _numel(old)
    if method == "full":
        return Estimate(method, base_total, base_total, head=head)
    if method == "head-only":
        if not head_name:
            raise ValueError("head-only training needs a classifier head; this model has none (use lora/symlora)")
        return Estimate(method, head, base_total, head=head)
    config = AdapterConfig(method=method, r=int(r), target_modules=targets)
    paths = resolve_targets(model, config)
    layers = []
    for path in paths:
        shape = layer_shape(model.get_submodule(path))
        assert shape is not None  # resolve_targets picks adaptable layers only
        layers.append((path, shape, BlockLayout(*shape).params(method, int(r))))
    adapter = sum(size for _, _, size in layers)
    return Estimate(method, adapter + head, base_total + adapter, adapter=adapter, head=head, layers=layers)


def equal_budget_rank(model: nn.Module, r: int, targets: list[str] | str | None, max_rank: int | None = None) -> int:
    """The SymLoRA rank whose adapter weights on ``targets`` come closest to LoRA's at rank
    ``r`` (each method on the layers it would adapt; at most ``max_rank``)."""
    lora = estimate(model, "lora", r, targets)
    symlora_layers = resolve_targets(model, AdapterConfig(method="symlora", r=1, target_modules=targets))
    layouts = [BlockLayout(*layer_shape(model.get_submodule(path))) for path in symlora_layers]
    return rank_for_budget(layouts, "symlora", lora.adapter, max_rank)


def formula_text(est: Estimate, r: int) -> str:
    """One line per distinct layer shape: how its adapter size comes about."""
    if est.method not in ("lora", "symlora"):
        return ""
    seen: OrderedDict[tuple[int, int], int] = OrderedDict()
    for _, shape, _ in est.layers:
        seen[shape] = seen.get(shape, 0) + 1
    lines = []
    for (n_in, n_out), count in seen.items():
        layer = BlockLayout(n_in, n_out)
        size = layer.params(est.method, r)
        if est.method == "lora":
            if n_in == n_out:
                expr = f"2·n·r = 2·{n_in}·{r} = {size:,}"
            else:
                expr = f"r·(in + out) = {r}·({n_in} + {n_out}) = {size:,}"
        elif layer.k == 1:
            expr = f"n·r + r = {layer.n}·{r} + {r} = {size:,}"
        else:
            expr = f"{layer.k} blocks × (n·r + r) = {layer.k}·({layer.n}·{r} + {r}) = {size:,}"
        lines.append(f"- {count} × layer {n_in}→{n_out}: {expr}")
    return "\n".join(lines)
