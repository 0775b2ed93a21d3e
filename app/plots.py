"""Small plotly figures for the lab.  Pure functions: data in, ``go.Figure`` out.

Every figure sets ``layout.uirevision`` so a user's zoom survives streamed updates, stays
a few hundred pixels tall, and uses the same colour per method everywhere.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import plotly.graph_objects as go
from plotly.subplots import make_subplots

METHOD_COLORS: dict[str, str] = {
    "symlora": "#0f8b8d",   # teal
    "lora": "#e8710a",      # orange
    "head-only": "#7f7f7f",  # grey
    "full": "#7b4ea3",      # purple
}
METHOD_NAMES: dict[str, str] = {"symlora": "SymLoRA", "lora": "LoRA", "head-only": "Head only", "full": "Full"}
MEMORY_PARTS: tuple[tuple[str, str, str], ...] = (
    ("frozen", "frozen weights", "#b8c4d6"),
    ("trainable", "trainable weights", "#0f8b8d"),
    ("grads", "gradients", "#e8710a"),
    ("optimizer", "optimizer state", "#c0392b"),
    ("activations", "activations", "#7b4ea3"),
    ("other", "process overhead (not the adapter)", "#e6e6e6"),
)
OTHER_NOTE = ("the rest of the measured peak: temporaries and allocator slack; on a CPU the whole process's "
              "growth, one-time warm-up included. It is not what the adapter costs.")
_FONT = dict(family="DejaVu Sans, Arial, sans-serif", size=12)
_MB = 1024 * 1024


@dataclass
class Curve:
    """One run's curves: loss per logged step, metric per evaluation."""

    label: str
    method: str
    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    metric: list[float] = field(default_factory=list)


# A tiny template instead of "plotly_white" (whose JSON would add ~8 KB to every update).
_AXIS = dict(gridcolor="#e8e8e8", zerolinecolor="#bbbbbb", linecolor="#bbbbbb")
_TEMPLATE = go.layout.Template(layout=dict(paper_bgcolor="white", plot_bgcolor="white", xaxis=_AXIS, yaxis=_AXIS,
                                           colorway=list(METHOD_COLORS.values())))


def _layout(fig: go.Figure, *, height: int, revision: str, **extra) -> go.Figure:
    layout = dict(height=height, margin=dict(l=50, r=20, t=60, b=40), uirevision=revision, font=_FONT,
                  template=_TEMPLATE, legend=dict(orientation="h", yanchor="bottom", y=1.12, x=0))
    layout.update(extra)
    fig.update_layout(**layout)
    return fig


def _placeholder(text: str, height: int, revision: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=text, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                       font=dict(size=14, color="#777777"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, height=height, revision=revision)


def color(method: str) -> str:
    return METHOD_COLORS.get(method, "#333333")


def metric_title(metric_name: str) -> str:
    return "Test accuracy (higher is better)" if metric_name == "accuracy" else "Held-out perplexity (lower is better)"


def curves_figure(curves: Sequence[Curve], metric_name: str = "accuracy", *, revision: str = "curves") -> go.Figure:
    """Training loss (left) and the evaluation metric (right), one colour per run.

    A live page asks for this figure a few times a second; plotly's checks make building it
    cost ~14 ms, more than a training step of the digits preset.  So plotly builds (and
    checks) a figure once per *shape* of the curves (runs, methods, which series they have),
    and each call puts its points into a copy of that figure's JSON (~0.5 ms)."""
    if not curves:
        return _placeholder("Press Start: the loss and the test metric appear here as the model learns.", 300, revision)
    shape = tuple((c.label, c.method, bool(c.steps), bool(c.eval_steps)) for c in curves)
    template = _curves_template(shape, metric_name, revision)
    points: list[tuple[list[int], list[float]]] = []
    for c in curves:  # in the order _curves_built adds the traces
        if c.steps:
            points += [(c.steps, c.loss), (c.steps, c.smoothed)]
        if c.eval_steps:
            points.append((c.eval_steps, c.metric))
    data = [dict(copy.deepcopy(trace), x=list(x), y=list(y)) for trace, (x, y) in zip(template["data"], points, strict=True)]
    # Plotly's own fast path (as plotly.express uses): the template was checked when built.
    return go.Figure({"data": data, "layout": copy.deepcopy(template["layout"])}, _validate=False)


@functools.lru_cache(maxsize=64)
def _curves_template(shape: tuple[tuple[str, str, bool, bool], ...], metric_name: str, revision: str) -> dict:
    """The plotly JSON of the curves figure for curves of ``shape``, one point per series."""
    curves = [Curve(label, method, steps=[0] if steps else [], loss=[0.0] if steps else [],
                    smoothed=[0.0] if steps else [], eval_steps=[0] if evals else [], metric=[0.0] if evals else [])
              for label, method, steps, evals in shape]
    return _curves_built(curves, metric_name, revision).to_plotly_json()


def _curves_built(curves: Sequence[Curve], metric_name: str, revision: str) -> go.Figure:
    """The curves figure built trace by trace through plotly (checked; slow)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Training loss", metric_title(metric_name)),
                        horizontal_spacing=0.12)
    dashes = {}
    for curve in curves:
        c = color(curve.method)
        dash = dashes.setdefault(curve.method, {})  # a second run of one method gets a dash
        style = "solid" if not dash else "dot"
        dash[curve.label] = style
        if curve.steps:
            fig.add_trace(go.Scatter(x=curve.steps, y=curve.loss, mode="markers", marker=dict(size=4, color=c, opacity=0.3),
                                     name=f"{curve.label} (raw)", legendgroup=curve.label, showlegend=False,
                                     hovertemplate="step %{x}<br>loss %{y:.3f}<extra></extra>"), row=1, col=1)
            fig.add_trace(go.Scatter(x=curve.steps, y=curve.smoothed, mode="lines", line=dict(color=c, width=2, dash=style),
                                     name=curve.label, legendgroup=curve.label,
                                     hovertemplate="step %{x}<br>smoothed loss %{y:.3f}<extra></extra>"), row=1, col=1)
        if curve.eval_steps:
            fmt = ".1%" if metric_name == "accuracy" else ".1f"
            fig.add_trace(go.Scatter(x=curve.eval_steps, y=curve.metric, mode="lines+markers",
                                     line=dict(color=c, width=2, dash=style), marker=dict(size=6, color=c),
                                     name=curve.label, legendgroup=curve.label, showlegend=not curve.steps,
                                     hovertemplate=f"step %{{x}}<br>{metric_name} %{{y:{fmt}}}<extra></extra>"),
                          row=1, col=2)
    fig.update_xaxes(title_text="step")
    if metric_name == "accuracy":
        fig.update_yaxes(tickformat=".0%", rangemode="tozero", row=1, col=2)
    return _layout(fig, height=320, revision=revision)


def memory_figure(rows: Sequence[tuple[str, Mapping[str, int]]], *, revision: str = "memory") -> go.Figure:
    """Where a training step's memory goes, one stacked bar per run (MB)."""
    if not rows:
        return _placeholder("Memory of a training step: shown once a run starts.", 170, revision)
    labels = [label for label, _ in rows]
    fig = go.Figure()
    for key, name, c in MEMORY_PARTS:
        values = [m.get(key, 0) / _MB for _, m in rows]
        if key == "other":  # greyed and hatched: not a part of the step the method decides
            fig.add_trace(go.Bar(y=labels, x=values, name=name, orientation="h", marker_color=c,
                                 marker_pattern=dict(shape="/", fgcolor="#b0b0b0", size=6),
                                 marker_line=dict(color="#b0b0b0", width=1),
                                 hovertemplate=f"{name}: %{{x:.2f}} MB — {OTHER_NOTE}<extra>%{{y}}</extra>"))
            continue
        fig.add_trace(go.Bar(y=labels, x=values, name=name, orientation="h", marker_color=c,
                             hovertemplate=f"{name}: %{{x:.2f}} MB<extra>%{{y}}</extra>"))
    fig.update_layout(barmode="stack")
    fig.update_xaxes(title_text="MB")
    fig.update_yaxes(autorange="reversed")
    width = max(len(label) for label in labels)
    return _layout(fig, height=max(180, 110 + 45 * len(rows)), revision=revision,
                   margin=dict(l=min(220, 20 + 7 * width), r=20, t=60, b=40))


def short_layer_name(name: str) -> str:
    """``blocks.3.attn.qkv`` → ``3.qkv``; ``model.layers.7.self_attn.q_proj`` → ``7.q_proj``."""
    for prefix in ("base_model.model.", "model.layers.", "model.", "blocks.", "layers.", "transformer.h."):
        if name.startswith(prefix):
            name = name[len(prefix):]
    for part in (".self_attn", ".attn", ".mlp", ".attention"):
        name = name.replace(part, "")
    return name


def spectrum_rows(spectrum: Mapping[str, Sequence[Sequence[float]]]) -> tuple[list[str], list[list[float]]]:
    """Flatten ``{layer: [[block values]]}`` into heatmap rows labelled ``layer`` or ``layer·b``."""
    labels, rows = [], []
    for name, blocks in spectrum.items():
        for b, values in enumerate(blocks):
            labels.append(short_layer_name(name) + (f" ·{b + 1}" if len(blocks) > 1 else ""))
            rows.append(list(values))
    return labels, rows


def spectrum_figure(spectrum: Mapping[str, Sequence[Sequence[float]]] | None, method: str, step: int | None = None,
                    *, revision: str = "spectrum") -> go.Figure:
    """Left: the values of the layer that moved most (signed eigenvalues for SymLoRA,
    singular values for LoRA).  Right: every adapted layer × value as a heatmap.  Both in
    one order, largest |value| first (the core's order), so column #i is bar #i."""
    symmetric = method == "symlora"
    what = "eigenvalues λ of ΔW" if symmetric else "singular values σ of ΔW"
    if not spectrum:
        return _placeholder("The spectrum of ΔW appears here during SymLoRA and LoRA runs.", 240, revision)
    labels, rows = spectrum_rows(spectrum)
    norms = [sum(v * v for v in row) for row in rows]
    top = max(range(len(rows)), key=norms.__getitem__)
    values = sorted(rows[top], key=abs, reverse=True)  # the heatmap's order: largest |value| first
    when = f" at step {step}" if step is not None else ""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.38, 0.62], horizontal_spacing=0.14,
                        subplot_titles=(f"{labels[top]}: {what}", f"all adapted layers{when}"))
    bar_colors = [color("symlora") if v >= 0 else "#c0392b" for v in values] if symmetric else color("lora")
    fig.add_trace(go.Bar(x=[f"{i + 1}" for i in range(len(values))], y=values, marker_color=bar_colors,
                         name=labels[top], showlegend=False,
                         hovertemplate="#%{x}: %{y:.4f}<extra></extra>"), row=1, col=1)
    peak = max((abs(v) for row in rows for v in row), default=0.0) or 1.0
    fig.add_trace(go.Heatmap(z=rows, y=labels, x=[f"{i + 1}" for i in range(len(rows[0]))],
                             colorscale="RdBu" if symmetric else "Oranges", zmid=0 if symmetric else None,
                             zmin=-peak if symmetric else 0, zmax=peak,
                             colorbar=dict(thickness=10, len=0.9),
                             hovertemplate="%{y} #%{x}: %{z:.4f}<extra></extra>"), row=1, col=2)
    fig.update_yaxes(autorange="reversed", row=1, col=2, tickfont=dict(size=9))
    fig.update_xaxes(title_text="#, largest |value| first", row=1, col=1)
    fig.update_xaxes(title_text="#, largest |value| first (same order as the bars)", row=1, col=2)
    return _layout(fig, height=max(340, min(900, 120 + 11 * len(rows))), revision=revision)


def params_figure(counts: Mapping[str, int], current: str, heads: Mapping[str, int] | None = None, *,
                  revision: str = "params") -> go.Figure:
    """Trainable parameters per method (keys are method names) at the current settings;
    the chosen method's bar is solid, the others faded.  ``heads``: the part of each count
    that is the new classifier head, drawn as its own grey segment, so the adapter's own
    weights (the number the text quotes) can be read off the bar too."""
    names = list(counts)
    heads = heads or {}
    labels = [METHOD_NAMES.get(n, n) for n in names]
    head = [min(heads.get(n, 0), counts[n]) for n in names]
    own = [counts[n] - h for n, h in zip(names, head)]
    opacity = [1.0 if n == current else 0.45 for n in names]

    def what(name: str) -> str:
        return {"symlora": "adapter", "lora": "adapter", "head-only": "head", "full": "all"}.get(name, "trained")

    fig = go.Figure(go.Bar(
        y=labels, x=own, orientation="h", name="adapter weights",
        marker_color=[color(n) for n in names], marker_opacity=opacity,
        customdata=[[what(n), counts[n]] for n in names],
        hovertemplate="%{y}: %{x:,} %{customdata[0]} weights (%{customdata[1]:,} trainable in all)<extra></extra>",
    ))
    if any(head):
        fig.add_trace(go.Bar(
            y=labels, x=[0 if n == "head-only" else h for n, h in zip(names, head)], orientation="h",
            name="new head", marker_color="#c8c8c8", marker_opacity=opacity,
            hovertemplate="%{y}: + new classifier head %{x:,}<extra></extra>",
        ))
    text = []
    for n, h, o in zip(names, head, own):
        if h and n in ("symlora", "lora"):
            text.append(f"{counts[n]:,} = {o:,} + {h:,}")
        else:
            text.append(f"{counts[n]:,}")
    top = max(counts.values(), default=0)
    fig.add_trace(go.Scatter(y=labels, x=[counts[n] for n in names], mode="text", text=text,
                             textposition="middle right", showlegend=False, hoverinfo="skip",
                             textfont=dict(size=11)))
    fig.update_layout(barmode="stack", showlegend=False)
    fig.update_xaxes(title_text="trainable: adapter + new head (grey)" if any(head) else "trainable parameters",
                     range=[0, top * 2.1 if top else 1])
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, height=80 + 32 * len(names), revision=revision, margin=dict(l=80, r=10, t=10, b=40))


def matrix_figure(matrix: Sequence[Sequence[float]], eigenvalues: Sequence[float], *, revision: str = "learn") -> go.Figure:
    """The Learn tab's ΔW: the matrix as a heatmap and its eigenvalues as bars."""
    peak = max((abs(v) for row in matrix for v in row), default=0.0) or 1.0
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], subplot_titles=("ΔW = Q·diag(Λ)·Qᵀ", "eigenvalues of ΔW"))
    fig.add_trace(go.Heatmap(z=matrix, colorscale="RdBu", zmid=0, zmin=-peak, zmax=peak, showscale=False,
                             hovertemplate="row %{y}, col %{x}: %{z:.3f}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Bar(x=[str(i + 1) for i in range(len(eigenvalues))], y=list(eigenvalues),
                         marker_color=[color("symlora") if v >= 0 else "#c0392b" for v in eigenvalues],
                         showlegend=False, hovertemplate="λ%{x} = %{y:.3f}<extra></extra>"), row=1, col=2)
    fig.update_yaxes(autorange="reversed", scaleanchor="x", row=1, col=1)
    return _layout(fig, height=300, revision=revision)
