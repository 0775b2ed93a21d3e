"""The Train tab: presets, settings, live parameter count, and a streamed training run.

``build`` lays the tab out and returns its components; ``wire`` connects the events.
The ``/train`` endpoint (public, streaming) is the Start button itself, so the page and
``gradio_client`` scripts run exactly the same code.
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from symlora.lab.runconfig import RunConfig

from . import collect, plots
from .analysis import symmetry_note
from .errors import page_error, readable, relay_to_page
from .lab import Lab
from .params import estimate, formula_text, kinds_for, layer_kinds
from .runner import MIN_UPDATE_S, Job, Update, run_label, status_line, stream
from .sessions import TEST_SAMPLE, SavedRun, free_memory
from .userdata import file_path, read_text_file
from .settings import FIELDS, LIMITS, METHOD_CHOICES, METHOD_LABELS, run_config_from_ui, ui_values_from

MAX_RUNS_KEPT = 4  # per session, oldest dropped first

EXPLAIN_CURVES = ("**What you are looking at:** the loss (left) is how wrong the model is on the batch it "
                  "just trained on — it should fall. The metric (right) is measured on held-out data the model "
                  "never trains on: that is the number that matters. Faint dots are single steps (the loss of that batch); the "
                  "line is their moving average over a window that grows with the run (up to 10 steps), so it "
                  "follows the dots on short runs too.")
EXPLAIN_MEMORY = ("**Memory of one training step.** Frozen weights cost the same for every method; adapters "
                  "shrink *trainable weights, gradients and optimizer state*. Activations (what the backward pass "
                  "needs) often dominate — LoRA saves parameters, not automatically memory. The grey hatched part, "
                 "*process overhead*, is **not the adapter's cost**: it is the rest of the measured peak (temporaries, "
                 "allocator slack; on a CPU the whole process's growth, one-time warm-up included).")
OWN_IMAGES = ("**Teach it your own classes.** Make one folder per class, put its pictures in it, zip the folders "
              "and upload the zip — for example `cats/1.jpg`, `cats/2.jpg`, …, `dogs/1.jpg`, … (one wrapping folder "
              "is fine). Limits: {limits} Your pictures are read in memory for your runs only; Gradio deletes uploads "
              "from the server within about an hour. **Clear the file** to go back to the preset's data.")
OWN_TEXT = ("**Teach it a style.** Paste text — quotes, poems, lyrics, recipes — **one piece per line**, or pieces of "
            "several lines separated by blank lines or by lines holding only `%` (like Debian's fortune files), or "
            "upload a .txt file. The note below says which splitting was used. Limits: {limits} "
            "**Empty the box** to go back to the preset's data.")
OWN_HOW = ["Upload a zip", "Collect examples in the browser"]
PAUSE_LABEL, RESUME_LABEL, STEP_LABEL = "‖ Pause", "▶ Resume", "⇥ Step"
PAUSED = ("‖ **Paused** — **⇥ Step** trains one more step, **▶ Resume** goes on. (A run paused for 5 minutes "
          "is stopped: others may be waiting for the trainer.)")
SHARE_NO_UPLOADS = ("⚠ **Links cannot carry your own data.** Whoever opens this link trains on the preset's data, "
                    "not on {name}: send them your file too.")
EXPLAIN_SPECTRUM = ("**What the adapter learned.** Each row of the heatmap is one adapted layer (or square "
                    "block); each cell one of its r directions. For SymLoRA the values are the *signed eigenvalues* "
                    "of ΔW = s·Q·diag(Λ)·Qᵀ (red = negative); for LoRA the singular values of s·B·A. They start at "
                    "exactly 0 (Λ = 0 / B = 0) and grow as the layer changes. Bars and heatmap columns are in one order: "
                    "largest |value| first (#1 is the strongest direction). Drag the slider to go back in time.")


@dataclass
class TrainUI:
    """The Train tab's components."""

    controls: list[Any]  # in settings.FIELDS order
    preset: Any
    preset_info: Any
    lesson_banner: Any
    model: Any
    data: Any
    method: Any
    r: Any
    lora_alpha: Any
    targets: Any
    targets_text: Any
    lr: Any
    steps: Any
    batch_size: Any
    seed: Any
    device: Any
    dice: Any
    advanced: Any
    param_md: Any
    param_plot: Any
    start: Any
    stop: Any
    reset: Any
    status: Any
    curves: Any
    memory: Any
    spectrum: Any
    spec_slider: Any
    spec_note: Any
    event_json: Any
    spectra_state: Any
    share_box: Any
    lesson_on: Any
    lesson_panels: Any
    lesson_presets: Any
    make_link: Any
    link: Any
    own_data: Any = None
    own_images: Any = None
    own_text: Any = None
    data_zip: Any = None
    data_text: Any = None
    data_txt: Any = None
    data_note: Any = None
    user_state: Any = None
    share_note: Any = None
    pause: Any = None
    step: Any = None
    collect: Any = None  # app.collect.CollectUI

    @property
    def data_inputs(self) -> list[Any]:
        """The user's own data as ``/train`` takes it: the zip, the text."""
        return [self.data_zip, self.data_text]

    @property
    def outputs(self) -> list[Any]:
        """What a training run updates (the ``/train`` endpoint's outputs, before states)."""
        return [self.status, self.curves, self.memory, self.spectrum, self.spec_slider, self.spec_note, self.event_json]


def build(lab: Lab) -> TrainUI:
    """Lay out the Train tab (call inside ``gr.Tab``)."""
    config = lab.default_config()
    s = ui_values_from(config)
    preset_obj = lab.preset(s["preset"])
    lesson_banner = gr.Markdown(visible=False, elem_id="lesson-banner")
    preset = gr.Radio(lab.preset_choices(), value=s["preset"], label="1 · Pick an experiment (preset)",
                      info="A ready-made setup: a pretrained model, new data to teach it, and settings that work. "
                           "Then press Start.", elem_id="preset")
    preset_info = gr.Markdown(preset_description(lab, preset_obj), elem_id="preset-info")
    vision = lab.model_task(s["model"]) == "vision"
    limits = lab.user_data.limits
    with gr.Accordion("Use your own data (optional)", open=False, elem_id="own-data") as own_data:
        with gr.Column(visible=vision) as own_images:
            # Radios, not tabs: Gradio 6.31 draws no tab buttons for tabs inside a closed accordion.
            own_how = gr.Radio(OWN_HOW, value=OWN_HOW[0], show_label=False, elem_id="own-how")
            with gr.Column() as own_zip:
                gr.Markdown(OWN_IMAGES.format(limits=limits.zip_text()), elem_id="own-images-help", padding=True)
                data_zip = gr.File(label="Your images: a .zip with one folder per class", file_types=[".zip"],
                                   type="filepath", elem_id="data-zip", height=120)
            with gr.Column(visible=False) as own_collect:
                collected = collect.build(lab)
            own_how.change(lambda how: (gr.update(visible=how == OWN_HOW[0]), gr.update(visible=how != OWN_HOW[0])),
                           own_how, [own_zip, own_collect], queue=False, show_progress="hidden",
                           api_visibility="private")
        with gr.Group(visible=not vision) as own_text:
            gr.Markdown(OWN_TEXT.format(limits=limits.text_text()), elem_id="own-text-help", padding=True)
            data_text = gr.Textbox("", label="Your text", lines=5, max_lines=12, elem_id="data-text",
                                   placeholder="The first quote…\nThe second quote, on its own line…\n…")
            data_txt = gr.File(label="…or upload a .txt file", file_types=[".txt"], type="filepath",
                               elem_id="data-txt", height=90)
    data_note = gr.Markdown(visible=False, elem_id="data-note")
    user_state = gr.State(None)  # {"name", "kind", "classes"} of the user's data in use, or None
    with gr.Row(equal_height=False):
        with gr.Column(scale=4, min_width=320):
            method = gr.Radio(METHOD_CHOICES, value=s["method"], label="2 · Method",
                              info="SymLoRA: ΔW = s·Q·diag(Λ)·Qᵀ (about half of LoRA's weights). LoRA: ΔW = s·B·A. "
                                   "Head only: train just the last layer. Full: train every weight.",
                              elem_id="method")
            r = gr.Slider(1, int(LIMITS["r"][1]), value=s["r"], step=1, label="Rank r",
                          info="How many directions each adapter may change. More = more weights.", elem_id="rank",
                          visible=config.uses_adapter)
            steps = gr.Slider(1, int(LIMITS["steps"][1]), value=s["steps"], step=1, label="Steps",
                              info="How many batches to learn from. Each step is one small update.", elem_id="steps")
            with gr.Row(equal_height=True):
                seed = gr.Number(value=s["seed"], precision=0, minimum=0, maximum=LIMITS["seed"][1], label="Seed",
                                 info="Same seed + same settings → the same curves on this machine.",
                                 elem_id="seed", scale=3)
                dice = gr.Button("New seed", size="sm", scale=1, elem_id="dice")
            with gr.Accordion("Advanced settings", open=False, elem_id="advanced") as advanced:
                model = gr.Dropdown(list(lab.models), value=s["model"], label="Pretrained model",
                                    info="The network we start from; its weights stay frozen (except with Full).",
                                    elem_id="model")
                data = gr.Dropdown(lab.data_choices(s["model"]), value=s["data"], label="Data",
                                   info="What the model learns now (a new task it was not trained on).",
                                   elem_id="data", allow_custom_value=True)
                lora_alpha = gr.Number(value=s["lora_alpha"], minimum=LIMITS["lora_alpha"][0], label="lora_alpha (α)",
                                       info="The update is scaled by s = α / r, so changing r keeps its size similar.",
                                       elem_id="alpha", visible=config.uses_adapter)
                targets = gr.CheckboxGroup([], value=[], label="Target layers",
                                           info="Which layers get an adapter (× how many, in→out shape). SymLoRA lists "
                                                "only square layers or whole multiples (split into square blocks).",
                                           elem_id="targets", visible=config.uses_adapter)
                targets_text = gr.Textbox(",".join(s["targets"]), visible=False, label="targets",
                                          info="Comma-separated layer kinds (e.g. attn.qkv,attn.proj); empty = the model's default.")
                lr = gr.Number(value=s["lr"], minimum=LIMITS["lr"][0], maximum=LIMITS["lr"][1], label="Learning rate",
                               info="Step size of AdamW (warm-up, then cosine decay). Too big → the loss explodes.",
                               elem_id="lr")
                batch_size = gr.Number(value=s["batch_size"], precision=0, minimum=1, maximum=LIMITS["batch_size"][1],
                                       label="Batch size", info="Examples per step: bigger is smoother but slower.",
                                       elem_id="batch")
                device = gr.Dropdown(lab.device_choices, value="auto", label="Device",
                                     info=lab.device_note().replace("**", ""), elem_id="device")
            param_md = gr.Markdown(label="Parameter count", elem_id="param-count")
            param_plot = gr.Plot(label="Trainable parameters per method", show_label=False, elem_id="param-plot")
            with gr.Row():
                start = gr.Button("▶ Start training", variant="primary", elem_id="start")
                stop = gr.Button("■ Stop", variant="stop", elem_id="stop")
            with gr.Row():
                pause = gr.Button(PAUSE_LABEL, size="sm", min_width=80, elem_id="pause")
                step = gr.Button(STEP_LABEL, size="sm", min_width=80, elem_id="step")
                reset = gr.Button("↺ Reset", size="sm", min_width=80, elem_id="reset")
            status = gr.Markdown("Press **Start** to fine-tune the pretrained model. " + lab.device_note(),
                                 label="Status", elem_id="status", min_height=60)
        with gr.Column(scale=7, min_width=420):
            curves = gr.Plot(plots.curves_figure([]), label="Loss and metric", show_label=False, elem_id="curves")
            gr.Markdown(EXPLAIN_CURVES)
            memory = gr.Plot(plots.memory_figure([]), label="Memory breakdown", show_label=False, elem_id="memory")
            gr.Markdown(EXPLAIN_MEMORY)
            spectrum = gr.Plot(plots.spectrum_figure(None, s["method"]), label="Spectrum of ΔW", show_label=False, elem_id="spectrum")
            spec_slider = gr.Slider(0, 1, value=0, step=1, label="Training time (evaluation point)",
                                    info="Which moment of the run the spectrum shows (0 = before training).",
                                    interactive=False, elem_id="spec-slider")
            spec_note = gr.Markdown(EXPLAIN_SPECTRUM, label="Spectrum note", elem_id="spec-note")
            with gr.Accordion("Raw event (what the /train API streams)", open=False):
                event_json = gr.JSON(label="Last event", elem_id="event-json")
    spectra_state = gr.State({"method": s["method"], "spectra": []})
    with gr.Accordion("Share this setup · teacher link", open=False, elem_id="share") as share_box:
        gr.Markdown("The link holds every setting and the seed: whoever opens it gets the same setup "
                    "(and, on the same machine, the same curves). For a lesson, hide the advanced settings "
                    "and choose which tabs and presets students see.")
        with gr.Row():
            lesson_on = gr.Checkbox(False, label="Lesson mode", info="Hide advanced settings in the link's page.",
                                    elem_id="lesson-on")
            lesson_panels = gr.CheckboxGroup([("Train", "train"), ("Compare", "compare"), ("Try", "try"), ("Learn", "learn")],
                                             value=["train", "compare", "try", "learn"], label="Tabs to show",
                                             info="Only these tabs appear in lesson mode.", elem_id="lesson-panels")
            lesson_presets = gr.CheckboxGroup(lab.preset_choices(), value=[], label="Presets to offer",
                                              info="None ticked = all presets.", elem_id="lesson-presets")
        share_note = gr.Markdown(visible=False, elem_id="share-note")
        with gr.Row():
            make_link = gr.Button("Make link", elem_id="make-link", scale=1)
            link = gr.Textbox(label="Link", buttons=["copy"], interactive=False, elem_id="share-link", scale=5,
                              info="Copy it into a chat, a slide or a worksheet.")
    # The targets travel as text (the checkboxes' choices depend on the model, and an API
    # client should not need them): the checkboxes write it in the browser.
    controls = [preset, model, data, method, r, lora_alpha, targets_text, lr, steps, batch_size, seed, device]
    assert len(controls) == len(FIELDS)
    return TrainUI(controls, preset, preset_info, lesson_banner, model, data, method, r, lora_alpha, targets, targets_text,
                   lr, steps, batch_size, seed, device, dice,
                   advanced, param_md, param_plot, start, stop, reset, status, curves, memory, spectrum, spec_slider,
                   spec_note, event_json, spectra_state, share_box, lesson_on, lesson_panels, lesson_presets,
                   make_link, link, own_data=own_data, own_images=own_images, own_text=own_text, data_zip=data_zip,
                   data_text=data_text, data_txt=data_txt, data_note=data_note, user_state=user_state,
                   share_note=share_note, pause=pause, step=step, collect=collected)


# --------------------------------------------------------------------------- helpers
def preset_description(lab: Lab, preset: Any) -> str:
    net = " · ⚠ needs internet" if preset.needs_internet else ""
    return (f"**{preset.name}** — {preset.description}  \n"
            f"<small>model `{preset.model}` · data `{preset.data}` · {preset.config.steps} steps{net}</small>")


FIRST_LOAD = {"text": "the first time takes 5–25 s: the model is read and, once per machine, converted",
              "vision": "the first time takes a few seconds"}


def preparing_note(lab: Lab, model: str) -> str:
    """The status while a model is loaded for the first time in this process."""
    task = lab.model_task(model)
    return f"⏳ **Preparing `{model}`** ({FIRST_LOAD.get(task, 'a moment')})…"


def target_choices(lab: Lab, model: str, method: str) -> list[tuple[str, str]]:
    """(label, value) for each layer kind of ``model`` that ``method`` can adapt."""
    bundle = lab.bases.model(model)
    head = getattr(bundle, "head_name", None)
    kinds = layer_kinds(bundle.model, exclude=(head,) if head else ())
    return [(k.describe(), k.suffix) for k in kinds if method != "symlora" or k.symmetric]


def target_update(lab: Lab, model: str, method: str, wanted: list[str] | str | None) -> dict[str, Any]:
    """A CheckboxGroup update: choices for (model, method) and the wanted kinds that fit
    (the model's default targets when nothing fits)."""
    bundle = lab.bases.model(model)
    choices = target_choices(lab, model, method)
    allowed = {v for _, v in choices}
    check = "lora" if method not in ("symlora", "lora") else method
    value = [k for k in kinds_for(bundle.model, wanted, check) if k in allowed] if wanted else []
    if not value:
        value = [k for k in kinds_for(bundle.model, bundle.default_targets, check) if k in allowed]
    return gr.update(choices=choices, value=value, visible=method in ("symlora", "lora"))


def n_classes(lab: Lab, model: str, data: str) -> int | None:
    if lab.model_task(model) != "vision":
        return None
    try:
        return len(lab.bases.dataset(data, 0).classes)
    except Exception:
        return None


def param_view(lab: Lab, model: str, data: str, method: str, r: float, targets: list[str],
               classes: int | None = None) -> tuple[str, Any]:
    """The parameter counter: Markdown and a bar per method at these settings (``classes``:
    the number of classes of the user's own data, when it replaces ``data``)."""
    try:
        bundle = lab.bases.model(model)
    except Exception as err:  # noqa: BLE001 — shown to the user
        return f"⚠ {readable(err)}", plots.params_figure({}, method)
    r = int(r)
    head = getattr(bundle, "head_name", None)
    classes = classes or n_classes(lab, model, data)
    spec = list(targets) or bundle.default_targets
    counts: dict[str, int] = {}
    heads: dict[str, int] = {}
    mine = None
    for m in ("symlora", "lora", "head-only", "full"):
        try:
            est = estimate(bundle.model, m, r, spec, head_name=head, n_classes=classes)
        except ValueError as err:
            if m == method:
                return f"⚠ {err}", plots.params_figure(counts, method, heads)
            continue
        if m != "full":
            counts[m] = est.trainable
            if m in ("symlora", "lora"):
                heads[m] = est.head
        if m == method:
            mine = est
    if mine is None:
        return "", plots.params_figure(counts, method, heads)
    label = METHOD_LABELS[method] + (f" r={r}" if method in ("symlora", "lora") else "")
    text = (f"**{label}** trains **{mine.trainable:,}** of {mine.total:,} parameters "
            f"(**{mine.percent:.2f} %**)")
    if method in ("symlora", "lora"):
        text += f" = **{mine.adapter:,} adapter weights** on {len(mine.layers)} layers"
        text += f" + {mine.head:,} in the new classifier head." if mine.head else "."
        text += "\n\n" + formula_text(mine, r)
        other = "lora" if method == "symlora" else "symlora"
        if counts.get(other):
            a = mine.adapter
            b = counts[other] - heads.get(other, 0)
            with_head = f" ({counts[other]:,} trainable with the head)" if heads.get(other) else ""
            if method == "symlora" and b:
                text += (f"\n\nLoRA on the same layers needs {b:,} adapter weights{with_head}: SymLoRA uses "
                         f"**{a / b:.0%}** of that.")
            elif a:
                text += (f"\n\nSymLoRA on the same layers would need {b:,} adapter weights, **{b / a:.0%}** of "
                         f"LoRA's{with_head}.")
        if mine.head:
            text += ("\n\n<small>Bars: trainable parameters, the adapter in colour and the new head "
                     "(the same for every method) in grey.</small>")
    elif method == "head-only":
        text += ": only the new classifier head."
    else:
        text += ": every weight (the baseline adapters try to match)."
    return text, plots.params_figure(counts, method, heads)


class SharedFigures:
    """Page figures built once for identical views, a few kept (least recently used out).

    The sessions that follow one shared run (a teacher link) show the same curves at the
    same step; building a plotly figure costs more than a training step of the digits
    preset, and thirty pages each building their own starved the run they were watching.
    Figures are only read after they are built (Gradio serialises them), so sharing is safe.
    """

    def __init__(self, capacity: int = 64) -> None:
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._guard = threading.Lock()
        self.capacity = capacity

    def get(self, key: Any, build: Callable[[], Any], keep: Any = None) -> Any:
        """The figure for ``key``, built by ``build()`` on a miss; ``keep`` is held with it
        (the object whose ``id`` is in the key, so the id cannot be reused meanwhile)."""
        with self._guard:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key][0]
        value = build()
        with self._guard:
            self._items[key] = (value, keep)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return value


FIGURES = SharedFigures()


def update_interval(active_runs: int) -> float:
    """Seconds between a page's step updates (evaluations and the end are always sent):
    :data:`~app.runner.MIN_UPDATE_S`, stretched when many pages follow runs at once — each
    update costs the server figures and JSON, and a class shares a few cores."""
    return MIN_UPDATE_S * max(1.0, active_runs / 2)


def curves_view(curve: Any, metric_name: str) -> Any:
    """The curves figure of one run, shared by the pages showing the same points."""
    key = ("curves", metric_name, curve.label, curve.method, tuple(curve.steps), tuple(curve.loss),
           tuple(curve.smoothed), tuple(curve.eval_steps), tuple(curve.metric))
    return FIGURES.get(key, lambda: plots.curves_figure([curve], metric_name))


def spectrum_view(spectra: list, method: str, index: int | None = None) -> tuple[Any, Any]:
    """(spectrum figure, slider update) for snapshot ``index`` (default: the latest)."""
    if not spectra:
        return plots.spectrum_figure(None, method), gr.update(minimum=0, maximum=1, value=0, interactive=False)
    index = len(spectra) - 1 if index is None else max(0, min(int(index), len(spectra) - 1))
    step, spec = spectra[index]
    # the same snapshot object (a shared run's event) → the same figure
    fig = FIGURES.get(("spectrum", method, step, id(spec)), lambda: plots.spectrum_figure(spec, method, step), keep=spec)
    return fig, gr.update(minimum=0, maximum=max(1, len(spectra) - 1), value=index, interactive=len(spectra) > 1)


def memory_rows(tracker_label: str, event: Any) -> list[tuple[str, dict[str, int]]]:
    return [(tracker_label, event.memory.to_dict())]


def add_run(runs: dict[str, SavedRun] | None, saved: SavedRun) -> dict[str, SavedRun]:
    """The session's runs with ``saved`` added under a unique label (newest last)."""
    runs = dict(runs or {})
    label, i = saved.label, 2
    while label in runs:
        label, i = f"{saved.label} #{i}", i + 1
    saved.label = label
    runs[label] = saved
    while len(runs) > MAX_RUNS_KEPT:
        runs.pop(next(iter(runs)))
    return runs


def run_choices(runs: dict[str, SavedRun] | None) -> Any:
    labels = list(reversed(list(runs or {})))
    return gr.update(choices=["Latest run"] + labels, value="Latest run")


def own_data_view(lab: Lab, model: str, zip_path: Any, text: str | None, seed: Any) -> tuple:
    """The own-data widgets for ``model``: (zip value, accordion, image group, text group,
    data note, share-link note, user state)."""
    task = lab.model_task(model)
    vision = task == "vision"
    zip_value: Any = gr.skip()
    note, user = "", None
    try:
        data = lab.user_data.resolve(task, zip_path, text, int(seed or 0))
    except ValueError as err:
        data = None
        if vision:
            zip_value = None  # cleared: the next run uses the preset's data
            gr.Warning(f"Could not use your zip: {readable(err)}")
            note = (f"⚠ **Your zip could not be used:** {readable(err)}  \nTraining uses the preset's data until "
                    f"you upload a zip that works.")
        else:
            note = f"⚠ **Your text cannot be used yet:** {readable(err)}"
    if data is not None:
        what = "images" if data.kind == "images" else "text"
        note = f"**Training on your {what}: `{data.name}`** — {data.summary()}."
        user = {"name": data.name, "kind": data.kind, "classes": data.classes}
    label = f"Use your own data — in use: {data.name}" if data is not None else "Use your own data (optional)"
    share = SHARE_NO_UPLOADS.format(name=f"`{data.name}`") if data is not None else ""
    return (zip_value, gr.update(label=label), gr.update(visible=vision), gr.update(visible=not vision),
            gr.update(value=note, visible=bool(note)), gr.update(value=share, visible=data is not None), user)


# --------------------------------------------------------------------------- wiring
@dataclass
class Wired:
    """What other parts of the page need from the Train tab's wiring."""

    train_event: Any
    update_params: Any
    param_inputs: list[Any]
    param_outputs: list[Any]
    data_view: Any = None
    data_view_inputs: list[Any] | None = None
    data_outputs: list[Any] | None = None


def wire(lab: Lab, t: TrainUI, runs_state: Any, try_run: Any) -> Wired:
    """Connect the Train tab's events."""
    param_inputs = [t.model, t.data, t.method, t.r, t.targets, t.user_state]
    param_outputs = [t.param_md, t.param_plot]

    def update_params(model, data, method, r, targets, user=None):
        classes = len(user["classes"]) if user and user.get("classes") else None
        return param_view(lab, model, data, method, r, targets, classes)

    light = dict(concurrency_id="light", concurrency_limit=4, api_visibility="private", show_progress="hidden")

    # -- the user's own data -------------------------------------------------------------
    data_cfg = dict(concurrency_id="userdata", concurrency_limit=2, api_visibility="private", show_progress="hidden")
    data_view_inputs = [t.model, t.data_zip, t.data_text, t.seed]
    data_outputs = [t.data_zip, t.own_data, t.own_images, t.own_text, t.data_note, t.share_note, t.user_state]

    def data_view(model, zip_path, text, seed):
        """Which upload fits the model, and what data a run will use (a bad zip is
        cleared with a warning, so the next run uses the preset's data)."""
        return own_data_view(lab, model, zip_path, text, seed)

    def after_data(event):
        return event.then(data_view, data_view_inputs, data_outputs, **data_cfg).then(
            update_params, param_inputs, param_outputs, **light)

    after_data(t.data_zip.upload(lambda: gr.update(value="Checking your zip…", visible=True), None, t.data_note,
                                 queue=False, show_progress="hidden", api_visibility="private"))
    t.data_zip.clear(data_view, data_view_inputs, data_outputs, **data_cfg).then(
        update_params, param_inputs, param_outputs, **light)
    t.data_text.change(data_view, data_view_inputs, data_outputs, trigger_mode="always_last", **data_cfg).then(
        update_params, param_inputs, param_outputs, **light)

    def on_txt(path):
        """A .txt upload goes into the text box (where the user sees and can edit it)."""
        if not path:
            return gr.skip(), gr.skip()
        try:
            text = read_text_file(file_path(path), lab.user_data.limits.text_file_bytes)
            lab.user_data.text(text)  # the same checks as a run: empty, one piece only, too long
        except ValueError as err:
            gr.Warning(f"Could not use {Path(file_path(path)).name}: {readable(err)}")
            return None, gr.skip()
        return None, text

    t.data_txt.upload(on_txt, t.data_txt, [t.data_txt, t.data_text], **data_cfg)
    if t.collect is not None:
        collect.wire(lab, t.collect, t.data_zip, after_data)

    def on_preset(name):
        p = lab.preset(name)
        config = lab.default_config(p.name)
        s = ui_values_from(config)
        try:
            tgt = target_update(lab, s["model"], s["method"], config.adapter.target_modules)
        except Exception as err:  # noqa: BLE001 — e.g. an online-only model offline
            gr.Warning(readable(err))
            tgt = gr.update(choices=[], value=[], visible=config.uses_adapter)
        return {
            t.preset_info: preset_description(lab, p), t.model: s["model"],
            t.data: gr.update(choices=lab.data_choices(s["model"]), value=s["data"]), t.method: s["method"],
            t.r: gr.update(value=s["r"], visible=config.uses_adapter), t.lora_alpha: gr.update(value=s["lora_alpha"], visible=config.uses_adapter),
            t.targets: tgt, t.lr: s["lr"], t.steps: s["steps"], t.batch_size: s["batch_size"], t.seed: s["seed"],
        }

    preset_outputs = [t.preset_info, t.model, t.data, t.method, t.r, t.lora_alpha, t.targets, t.lr,
                      t.steps, t.batch_size, t.seed]

    def on_preset_shown(name):
        """Switch presets, first saying what happens when the model is not loaded yet
        (a language model takes seconds the first time: nothing else would show it)."""
        p = lab.preset(name)
        loaded = p.model in lab.bases.loaded_models()
        if not loaded:
            yield {t.preset_info: preset_description(lab, p), t.status: preparing_note(lab, p.model)}
        out = on_preset(name)
        if not loaded:
            out[t.status] = f"**{p.name}** is ready. Press **Start** to train."
        yield out

    after_data(t.preset.input(on_preset_shown, t.preset, preset_outputs + [t.status], **light))

    def on_model(model, method, targets):
        try:
            tgt = target_update(lab, model, method, targets)
        except Exception as err:  # noqa: BLE001
            raise page_error(err) from err
        choices = lab.data_choices(model)
        return gr.update(choices=choices, value=choices[0] if choices else None), tgt

    after_data(t.model.input(on_model, [t.model, t.method, t.targets], [t.data, t.targets], **light))

    def on_method(model, method, targets):
        adapter = method in ("symlora", "lora")
        return target_update(lab, model, method, targets), gr.update(visible=adapter), gr.update(visible=adapter)

    t.method.input(on_method, [t.model, t.method, t.targets], [t.targets, t.r, t.lora_alpha], **light).then(
        update_params, param_inputs, param_outputs, **light)
    for comp in (t.data, t.targets):
        comp.input(update_params, param_inputs, param_outputs, **light)
    t.targets.change(None, t.targets, t.targets_text, js="(v) => (v || []).join(',')", queue=False,
                     show_progress="hidden")
    t.r.release(update_params, param_inputs, param_outputs, **light)
    t.dice.click(lambda: random.randint(0, 99_999), None, t.seed, **light)

    # -- training ------------------------------------------------------------------
    train_outputs = t.outputs + [t.spectra_state, runs_state, try_run]

    skip_all = (gr.skip(),) * (len(train_outputs) - 1)

    def produce(settings: RunConfig, runs: dict, session: str, flag: Any, zip_path: Any = None, text: str = ""):
        """The run as page updates (runs in the Job's worker thread)."""
        final = None
        label = run_label(settings)
        try:
            yield Update((f"Preparing **{label}** (loading the model and data)…",) + skip_all)
            user = lab.user_data.resolve(lab.model_task(settings.model), zip_path, text, settings.seed)
            who = ""
            if user is not None:
                label = f"{label} · {user.name}"
                who = f"your data “{user.name}”"
                yield Update((f"Preparing **{label}** on your data ({user.summary()})…",) + skip_all)
            shown_spectra, shown_memory, last_sent = -1, None, 0.0
            for event, tracker, emit in stream(settings, data=user.splits if user else None, stop=flag, label=label):
                if not emit and not flag.paused:
                    continue
                forced = event.kind in ("start", "eval") or event.is_final or flag.paused
                if not forced and time.monotonic() - last_sent < update_interval(lab.runs.active()):
                    continue
                last_sent = time.monotonic()
                if len(tracker.spectra) != shown_spectra or event.is_final:
                    shown_spectra = len(tracker.spectra)
                    spec_fig, slider = spectrum_view(tracker.spectra, settings.method)
                else:
                    spec_fig, slider = gr.skip(), gr.skip()
                memory = event.memory.to_dict() if event.memory is not None else None
                memory_fig = gr.skip() if memory == shown_memory and not event.is_final else FIGURES.get(
                    ("memory", label, tuple(sorted((memory or {}).items()))),
                    lambda: plots.memory_figure(memory_rows(label, event)))
                shown_memory = memory
                status = flag.last_status = status_line(event, who) + tracker.note
                if flag.paused and not event.is_final:
                    status = PAUSED + "  \n" + status
                update = [status, curves_view(tracker.curve, event.metric_name), memory_fig, spec_fig, slider, gr.skip(),
                          event.to_dict(), {"method": settings.method, "spectra": list(tracker.spectra)},
                          gr.skip(), gr.skip()]
                warning = None
                if event.is_final:
                    result = event.result
                    bundle = tracker.bundle
                    saved = SavedRun.from_result(label, settings, result, tracker.curve, tracker.spectra,
                                                 data_name=user.name if user else None,
                                                 test_sample=user.test_sample(TEST_SAMPLE) if user else None)
                    if bundle is not None:
                        lab.tuned.put(saved.run_id, bundle)
                        tracker.bundle = None
                    lab.runs.remember(session, saved.run_id)
                    runs = add_run(runs, saved)
                    update[5] = EXPLAIN_SPECTRUM + "\n\n" + symmetry_note(bundle, settings.method,
                                                                           tracker.symmetry)
                    update[8] = runs
                    update[9] = run_choices(runs)
                    if event.kind == "error":
                        warning = event.message or "the run ended with an error"
                    final = tuple(update)
                    lab.runs.finish(session, "train", flag, final)  # before yielding: Stop may be waiting
                yield Update(tuple(update), warning)
        finally:
            lab.runs.finish(session, "train", flag, final)
            free_memory()

    def train(preset: str, model: str, data: str, method: str, r: float, lora_alpha: float, targets: str,
              lr: float, steps: float, batch_size: float, seed: float, device: str, data_zip: str | None = None,
              data_text: str = "", runs: dict | None = None, request: gr.Request = None):
        """Fine-tune ``model`` on ``data`` with ``method`` (symlora, lora, head-only, full) and stream the run.
        ``targets``: comma-separated layer kinds such as ``attn.qkv,attn.proj`` (empty: the model's default).
        Your own data replaces ``data``: ``data_zip`` (image models) is a .zip with one folder of images per
        class; ``data_text`` (language models) is text: one piece per line, or pieces separated by blank lines or ``%`` lines."""
        try:
            settings = run_config_from_ui(preset, model, data, method, r, lora_alpha, targets, lr, steps,
                                          batch_size, seed, device)
        except (TypeError, ValueError) as err:
            raise page_error(f"Invalid settings: {err}") from err
        session = (request.session_hash if request is not None else None) or "anonymous"
        flag = lab.runs.begin(session, "train")
        job = Job(produce(settings, runs or {}, session, flag, data_zip, data_text or ""), flag)
        yield from relay_to_page(job, "run", skip_all)

    train_event = t.start.click(
        train, t.controls + t.data_inputs + [runs_state], train_outputs, api_name="train",
        api_description="Fine-tune with the given settings; streams status, plots and the raw event (JSON) "
                        "a few times a second. The last update carries the final result. Optional own data "
                        "replaces the preset's: data_zip (a .zip with one folder of images per class, for image "
                        "models) or data_text (one piece per line, or pieces separated by blank lines or '%' lines, for language models).",
        concurrency_id="heavy", concurrency_limit=lab.heavy_limit, show_progress="full", show_progress_on=[t.status],
    )

    def stop(request: gr.Request):
        session = request.session_hash or "anonymous"
        if not lab.runs.stop(session, "train"):
            return ("Nothing is running (a run waiting in the queue was cancelled).",) + skip_all
        final = lab.runs.wait_final(session, "train", timeout=120)
        return final or ("■ Stopping…",) + skip_all

    t.stop.click(stop, None, train_outputs, cancels=[train_event], concurrency_limit=None,
                 api_visibility="private", show_progress="hidden").then(
        lambda: PAUSE_LABEL, None, t.pause, queue=False, show_progress="hidden", api_visibility="private")

    # -- pause / resume / step (the run waits before its next step; Stop still ends it) ----
    def running_flag(request: gr.Request):
        flags = lab.runs.flags(request.session_hash or "anonymous", "train")
        return flags[-1] if flags else None

    def pause(request: gr.Request):
        flag = running_flag(request)
        if flag is None or not hasattr(flag, "pause"):
            return PAUSE_LABEL, "Nothing is running: press **Start** first."
        if flag.paused:
            flag.resume()
            return PAUSE_LABEL, flag.last_status or gr.skip()
        flag.pause()
        return RESUME_LABEL, PAUSED + "  \n" + flag.last_status

    def step(request: gr.Request):
        flag = running_flag(request)
        if flag is None or not hasattr(flag, "step"):
            return PAUSE_LABEL, f"Nothing is running: press **Start**, then **{PAUSE_LABEL}** and **{STEP_LABEL}** through it."
        if not flag.paused:  # first press: stop where it is, the next ones step
            flag.pause()
            return RESUME_LABEL, PAUSED + "  \n" + flag.last_status
        flag.step()
        return gr.skip(), gr.skip()

    control = dict(queue=False, api_visibility="private", show_progress="hidden")
    t.pause.click(pause, None, [t.pause, t.status], **control)
    t.step.click(step, None, [t.pause, t.status], **control)
    t.start.click(lambda: PAUSE_LABEL, None, t.pause, **control)

    def on_spec_slider(index, state):
        fig, _ = spectrum_view(state.get("spectra", []), state.get("method", "symlora"), index)
        return fig

    t.spec_slider.release(on_spec_slider, [t.spec_slider, t.spectra_state], t.spectrum, **light)

    def reset(preset, request: gr.Request):
        lab.runs.stop(request.session_hash or "anonymous")
        out = on_preset(preset)
        s = ui_values_from(lab.default_config(preset))
        out.update({
            t.status: "Settings reset to the preset. Press **Start** to train.",
            t.curves: plots.curves_figure([]), t.memory: plots.memory_figure([]),
            t.spectrum: plots.spectrum_figure(None, s["method"]),
            t.spec_slider: gr.update(minimum=0, maximum=1, value=0, interactive=False),
            t.spec_note: EXPLAIN_SPECTRUM, t.event_json: None,
            t.spectra_state: {"method": s["method"], "spectra": []}, t.device: "auto", t.pause: PAUSE_LABEL,
        })
        return out

    reset_outputs = preset_outputs + [t.status, t.curves, t.memory, t.spectrum, t.spec_slider, t.spec_note,
                                      t.event_json, t.spectra_state, t.device, t.pause]
    after_data(t.reset.click(reset, t.preset, reset_outputs, cancels=[train_event], api_visibility="private",
                             concurrency_limit=None, show_progress="hidden"))
    return Wired(train_event, update_params, param_inputs, param_outputs, data_view, data_view_inputs, data_outputs)
