"""The Compare tab: LoRA vs SymLoRA (and optionally head-only) on identical terms.

Same data, seed (so the same batches in the same order), layers, learning rate and steps —
taken from the Train tab — at equal rank or at an equal parameter budget.  Runs go one
after another, so each one's step time and memory are measured undisturbed; their curves
overlay live.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr
from symlora.lab.presets import get_preset
from symlora.lab.runconfig import RunConfig

from . import plots
from .lab import Lab
from .params import equal_budget_rank, estimate
from .run_control import RunControl, read_settings, run_choices
from .runner import Update, format_metric, run_label, status_line, stream
from .settings import LIMITS
from .tab_train import target_choices

INTRO = ("### LoRA vs SymLoRA, fairly\n"
         "Both runs use the **settings of the Train tab**: the same data, the same seed (so the very same "
         "batches in the same order), the same layers, learning rate and number of steps. They run one after "
         "the other, so their timings and memory do not disturb each other. Choose whether both get the "
         "same rank *r*, or the same number of trainable weights.")
TABLE_HEADERS = ["method", "r", "trainable params", "vs LoRA", "before", "after", "step (ms)",
                 "training memory (MB)", "wall (s)"]
MEMORY_NOTE = ("Memory bars count the tensors of one training step (weights, gradients, optimizer state, "
               "activations); process-level growth is left out here because whichever run goes first pays "
               "for the allocator's warm-up.")


@dataclass
class CompareUI:
    """The Compare tab's components (built by keywords in :func:`build`)."""

    budget: gr.Radio
    include_head: gr.Checkbox
    start: gr.Button
    stop: gr.Button
    status: gr.Markdown
    curves: gr.Plot
    memory: gr.Plot
    table: gr.Dataframe
    conclusion: gr.Markdown

    @property
    def outputs(self) -> list[Any]:
        """What a comparison updates (the ``/compare`` endpoint's outputs, before states)."""
        return [self.status, self.curves, self.memory, self.table, self.conclusion]


def build(lab: Lab) -> CompareUI:
    """Lay out the Compare tab (call inside ``gr.Tab``)."""
    gr.Markdown(INTRO)
    with gr.Row():
        budget = gr.Radio([("Equal rank r", "rank"), ("Equal parameter budget", "budget")], value="rank",
                          label="Fair by…", elem_id="compare-budget",
                          info="Equal rank: SymLoRA uses about half the weights. Equal budget: SymLoRA gets a "
                               "higher rank so both train the same number of weights.")
        include_head = gr.Checkbox(True, label="Also run head-only", elem_id="compare-head",
                                   info="The no-adapter baseline: only the new classifier head learns (vision).")
    with gr.Row():
        start = gr.Button("▶ Run the comparison", variant="primary", elem_id="compare-start")
        stop = gr.Button("■ Stop", variant="stop", elem_id="compare-stop")
    status = gr.Markdown("Press **Run the comparison**: LoRA first, then SymLoRA (then head-only).",
                         elem_id="compare-status", min_height=60)
    curves = gr.Plot(plots.curves_figure([], revision="compare"), label="Curves of every run", show_label=False,
                     elem_id="compare-curves")
    memory = gr.Plot(plots.memory_figure([], revision="compare-mem"), label="Memory per method", show_label=False,
                     elem_id="compare-memory")
    gr.Markdown(MEMORY_NOTE)
    table = gr.Dataframe(headers=TABLE_HEADERS, value=None, interactive=False, label="Result", elem_id="compare-table")
    conclusion = gr.Markdown(elem_id="compare-conclusion")
    return CompareUI(budget=budget, include_head=include_head, start=start, stop=stop, status=status, curves=curves,
                     memory=memory, table=table, conclusion=conclusion)


def tuned_rates(settings: RunConfig, lora: RunConfig, sym: RunConfig) -> tuple[RunConfig, RunConfig, str]:
    """Each method at the preset's learning rate for it (chosen on validation data by
    ``bench/claim.py``) while the page shows the preset's rate; a rate the user typed
    applies to both.  Returns (lora, sym, a sentence saying so, or "")."""
    try:
        preset = get_preset(settings.preset)
    except ValueError:
        return lora, sym, ""
    lr_lora, lr_sym = preset.lr_for("lora"), preset.lr_for("symlora")
    if lr_lora == lr_sym or settings.lr != preset.lr_for(settings.method):
        return lora, sym, ""
    return (lora.replace(lr=lr_lora), sym.replace(lr=lr_sym),
            f" Each at its own tuned learning rate (LoRA {lr_lora:g}, SymLoRA {lr_sym:g}).")


def plan(lab: Lab, settings: RunConfig, budget: str, include_head: bool) -> tuple[list[RunConfig], str]:
    """The runs to make and a sentence on how they were made comparable."""
    bundle = lab.bases.model(settings.model)
    head = getattr(bundle, "head_name", None)
    symmetric = {v for _, v in target_choices(lab, settings.model, "symlora")}
    chosen = settings.adapter.target_modules
    wanted = [chosen] if isinstance(chosen, str) else list(chosen or [])
    targets = [k for k in wanted if k in symmetric]
    note = ""
    if wanted and len(targets) < len(wanted):
        note = f" Layers SymLoRA cannot adapt were left out for both: {', '.join(sorted(set(wanted) - symmetric))}."
    if wanted and not targets:
        targets = []  # fall back to the model's defaults
    spec = targets or bundle.default_targets
    lora, sym, rates = tuned_rates(settings, settings.replace(method="lora", target_modules=targets or None),
                                   settings.replace(method="symlora", target_modules=targets or None))
    note = rates + note
    n_lora = estimate(bundle.model, "lora", lora.adapter.r, spec).adapter
    how = f"Both at rank r = {settings.adapter.r}."
    if budget == "budget":
        r_max = int(LIMITS["r"][1])
        best = equal_budget_rank(bundle.model, lora.adapter.r, spec, max_rank=r_max)
        sym = sym.replace(r=best)
        n_sym = estimate(bundle.model, "symlora", best, spec).adapter
        how = (f"Equal budget: LoRA r = {lora.adapter.r} has {n_lora:,} adapter weights; SymLoRA r = {best} has "
               f"{n_sym:,}.")
        if best == r_max and n_sym < n_lora:
            how += (f" SymLoRA's rank stops at the app's limit of {r_max}, so it has fewer weights than LoRA here:"
                    " lower LoRA's rank for an equal budget.")
    runs = [lora, sym]
    if include_head and head:
        runs.append(settings.replace(method="head-only", target_modules=None))
    return runs, how + note


def tensor_bytes(memory: dict[str, int]) -> int:
    """Bytes of the tensors a step holds (everything but the process-level "other")."""
    return sum(v for k, v in memory.items() if k not in ("other", "total"))


def tensors_only(memory: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in memory.items() if k != "other"}


def summary_rows(results: list[tuple[RunConfig, Any]]) -> list[list[Any]]:
    lora = next((res.trainable_params for s, res in results if s.method == "lora"), None)
    rows = []
    for s, res in results:
        name = res.metric_name
        rows.append([
            run_label(s).split(" r=")[0], s.adapter.r if s.uses_adapter else "–", f"{res.trainable_params:,}",
            f"{res.trainable_params / lora:.0%}" if lora else "–",
            format_metric(name, res.metric_before), format_metric(name, res.metric_after),
            f"{res.step_ms:.0f}" if res.step_ms else "–", f"{tensor_bytes(res.memory.to_dict()) / 2**20:.1f}",
            f"{res.wall_s:.1f}",
        ])
    return rows


def conclusion(results: list[tuple[RunConfig, Any]]) -> str:
    """Two sentences on the outcome, worded by the actual gap (no cheerleading)."""
    by = {s.method: res for s, res in results}
    if "lora" not in by or "symlora" not in by:
        return ""
    lo, sy = by["lora"], by["symlora"]
    name = lo.metric_name
    a, b = sy.metric_after, lo.metric_after
    if a is None or b is None:
        return ""
    share = sy.trainable_params / lo.trainable_params if lo.trainable_params else 0
    if name == "accuracy":
        gap = 100 * (a - b)  # percentage points, positive = SymLoRA better
        close = abs(gap) < 2
    else:  # perplexity: lower is better
        gap = 100 * (b - a) / b
        close = abs(gap) < 5
    verdict = "matched" if close else ("beat" if gap > 0 else "trailed")
    text = (f"**SymLoRA {verdict} LoRA** ({name} {format_metric(name, a)} vs {format_metric(name, b)}) while "
            f"training **{share:.0%}** of LoRA's weights ({sy.trainable_params:,} vs {lo.trainable_params:,}, "
            f"head included).")
    if "head-only" in by:
        text += (f" Head-only reached {format_metric(name, by['head-only'].metric_after)}: the gap to it is what "
                 f"changing the inside of the network buys.")
    return text + " Few steps and one seed are one sample: try more steps or another seed before concluding."


class Board:
    """What the page shows of a comparison: every finished run's curve, memory and result,
    and the run going now."""

    def __init__(self) -> None:
        self.done: list[tuple[RunConfig, Any]] = []
        self.curves: list[plots.Curve] = []
        self.memory: list[tuple[str, dict]] = []
        self.metric_name = "accuracy"

    def figures(self, tracker: Any = None, label: str = "", memory: dict | None = None) -> tuple[Any, Any]:
        """(curves, memory) figures of the finished runs, plus the one going (``tracker``)."""
        curves = self.curves + ([tracker.curve] if tracker is not None else [])
        rows = self.memory + ([(label, tensors_only(memory))] if memory is not None else [])
        return (plots.curves_figure(curves, self.metric_name, revision="compare"),
                plots.memory_figure(rows, revision="compare-mem"))

    def add(self, settings: RunConfig, result: Any, tracker: Any, label: str) -> None:
        self.done.append((settings, result))
        self.curves.append(tracker.curve)
        self.memory.append((label, tensors_only(result.memory.to_dict())))


def compare_updates(lab: Lab, control: RunControl, settings: RunConfig, budget: str, include_head: bool, runs: dict,
                    session: str, flag: Any, zip_path: Any = None, text: str = "") -> Iterator[Update]:
    """The comparison as page updates (in the Job's worker thread): the planned runs one
    after another, then the table and the conclusion."""
    skips = control.skips
    yield Update(("Preparing the comparison…",) + skips)
    plan_runs, how = plan(lab, settings, budget, include_head)
    user = lab.user_data.resolve(lab.model_task(settings.model), zip_path, text, settings.seed)
    if user is not None:
        how += f" On your data “{user.name}” ({user.summary()})."
    board = Board()
    for i, s in enumerate(plan_runs):
        if flag.is_set():
            break
        label = run_label(s) + (f" · {user.name}" if user else "")
        for event, tracker, emit in stream(s, data=user.splits if user else None, stop=flag, label=label):
            if not emit:
                continue
            board.metric_name = event.metric_name
            status = f"Run {i + 1} of {len(plan_runs)}. {how}\n\n" + status_line(event, label) + tracker.note
            values = (status,) + board.figures(tracker, label, event.memory.to_dict()) + (gr.skip(),) * 4
            if event.is_final:
                runs = control.keep(session, runs, "Compare: " + label, s, event.result, tracker, user)
                board.add(s, event.result, tracker, label)
                values = values[:3] + (summary_rows(board.done), gr.skip(), runs, run_choices(runs))
                if event.kind == "error":
                    yield Update(values, event.message)
                    flag.set()
                    break
            yield Update(values)
    ending = ("■ **Comparison stopped.** " if flag.is_set() else "✓ **Comparison finished.** ") + how
    final = (ending,) + board.figures() + (summary_rows(board.done), conclusion(board.done), runs, run_choices(runs))
    control.finished(session, flag, final)
    yield Update(final)


def wire(lab: Lab, c: CompareUI, controls: list[Any], runs_state: Any, try_run: Any, data_inputs: list[Any]) -> Any:
    """Connect the Compare tab; returns its run event.  ``controls``: the Train tab's
    settings; ``data_inputs``: its own-data widgets (zip, text): a comparison trains on the
    same data as a run would."""
    outputs = c.outputs + [runs_state, try_run]
    control = RunControl(lab, "compare", "comparison", (gr.skip(),) * (len(outputs) - 1))

    def compare(preset: str, model: str, data: str, method: str, r: float, lora_alpha: float, targets: str,
                lr: float, steps: float, batch_size: float, seed: float, device: str, budget: str,
                include_head: bool, data_zip: str | None = None, data_text: str = "", runs: dict | None = None,
                request: gr.Request = None):
        settings = read_settings([preset, model, data, method, r, lora_alpha, targets, lr, steps, batch_size, seed,
                                  device])
        yield from control.start(request, lambda session, flag: compare_updates(
            lab, control, settings, budget, include_head, runs or {}, session, flag, data_zip, data_text or ""))

    event = c.start.click(compare, controls + [c.budget, c.include_head] + list(data_inputs) + [runs_state], outputs,
                          api_name="compare",
                          api_visibility="undocumented", concurrency_id="heavy", concurrency_limit=lab.heavy_limit,
                          show_progress="full", show_progress_on=[c.status])
    control.wire_stop(c.stop, outputs, event)
    return event
