"""The Train tab: presets, settings, live parameter count, and a streamed training run.

``build`` lays the tab out and returns its components (a :class:`TrainUI`); ``wire``
connects the events, one function per concern: the user's own data, presets and method,
run control (start, stop, pause, step; the bookkeeping is :mod:`app.run_control`'s, shared
with the Compare tab), the plots, reset.  The ``/train`` endpoint (public, streaming) is the
Start button itself, so the page and ``gradio_client`` scripts run exactly the same code.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from symlora.lab.runconfig import RunConfig

from . import collect, plots
from .analysis import symmetry_note
from .collect import CollectUI
from .errors import page_error, readable
from .lab import Lab
from .live_view import LiveView, curves_view, spectrum_view
from .params import estimate, formula_text, kinds_for, layer_kinds
from .run_control import RunControl, read_settings, run_choices, session_of
from .runner import Update, run_label, status_line, stream
from .settings import ADAPTER_METHODS, FIELDS, LIMITS, METHOD_CHOICES, METHOD_LABELS, ui_values_from
from .userdata import file_path, read_text_file

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
    """The Train tab's components, by concern (built by keywords in :func:`build`)."""

    # presets and method: the run's settings
    lesson_banner: gr.Markdown
    preset: gr.Radio
    preset_info: gr.Markdown
    method: gr.Radio
    r: gr.Slider
    steps: gr.Slider
    seed: gr.Number
    dice: gr.Button
    advanced: gr.Accordion
    model: gr.Dropdown
    data: gr.Dropdown
    lora_alpha: gr.Number
    targets: gr.CheckboxGroup
    targets_text: gr.Textbox  # the targets as text (what /train takes), written by the checkboxes in the browser
    lr: gr.Number
    batch_size: gr.Number
    device: gr.Dropdown
    param_md: gr.Markdown
    param_plot: gr.Plot
    # the user's own data
    own_data: gr.Accordion
    own_images: gr.Column
    own_text: gr.Group
    data_zip: gr.File
    data_text: gr.Textbox
    data_txt: gr.File
    data_note: gr.Markdown
    user_state: gr.State  # {"name", "kind", "classes"} of the user's data in use, or None
    collect: CollectUI  # examples collected in the browser (pictures taken or drawn, by class)
    # run control
    start: gr.Button
    stop: gr.Button
    pause: gr.Button
    step: gr.Button
    reset: gr.Button
    status: gr.Markdown
    # plots of the run
    curves: gr.Plot
    memory: gr.Plot
    spectrum: gr.Plot
    spec_slider: gr.Slider
    spec_note: gr.Markdown
    event_json: gr.JSON
    spectra_state: gr.State
    # the share link (and lesson mode)
    share_box: gr.Accordion
    lesson_on: gr.Checkbox
    lesson_panels: gr.CheckboxGroup
    lesson_presets: gr.CheckboxGroup
    share_note: gr.Markdown
    make_link: gr.Button
    link: gr.Textbox

    @property
    def controls(self) -> list[Any]:
        """The settings as ``/train`` takes them, in ``settings.FIELDS`` order (the targets
        travel as text: the checkboxes' choices depend on the model, and an API client
        should not need them)."""
        return [self.preset, self.model, self.data, self.method, self.r, self.lora_alpha, self.targets_text,
                self.lr, self.steps, self.batch_size, self.seed, self.device]

    @property
    def data_inputs(self) -> list[Any]:
        """The user's own data as ``/train`` takes it: the zip, the text."""
        return [self.data_zip, self.data_text]

    @property
    def outputs(self) -> list[Any]:
        """What a training run updates (the ``/train`` endpoint's outputs, before states)."""
        return [self.status, self.curves, self.memory, self.spectrum, self.spec_slider, self.spec_note, self.event_json]


# --------------------------------------------------------------------------- layout
def build(lab: Lab) -> TrainUI:
    """Lay out the Train tab (call inside ``gr.Tab``): the preset and your own data on top,
    the settings and run buttons on the left, the plots on the right, the share box below."""
    s = ui_values_from(lab.default_config())  # what the controls show first
    lesson_banner = gr.Markdown(visible=False, elem_id="lesson-banner")
    preset = build_preset(lab, s)
    own = build_own_data(lab, s)
    with gr.Row(equal_height=False):
        with gr.Column(scale=4, min_width=320):
            settings = build_settings(lab, s)
            run = build_run_control(lab)
        with gr.Column(scale=7, min_width=420):
            shown = build_plots(s)
    spectra_state = gr.State({"method": s["method"], "spectra": []})
    share = build_share(lab)
    ui = TrainUI(lesson_banner=lesson_banner, **preset, **own, **settings, **run, **shown,
                 spectra_state=spectra_state, **share)
    assert len(ui.controls) == len(FIELDS)
    return ui


def build_preset(lab: Lab, s: dict[str, Any]) -> dict[str, Any]:
    """Step 1: the preset radio and its description."""
    preset = gr.Radio(lab.preset_choices(), value=s["preset"], label="1 · Pick an experiment (preset)",
                      info="A ready-made setup: a pretrained model, new data to teach it, and settings that work. "
                           "Then press Start.", elem_id="preset")
    preset_info = gr.Markdown(preset_description(lab, lab.preset(s["preset"])), elem_id="preset-info")
    return dict(preset=preset, preset_info=preset_info)


def build_own_data(lab: Lab, s: dict[str, Any]) -> dict[str, Any]:
    """The "Use your own data" accordion: a zip of images (or examples collected in the
    browser) for an image model, text for a language model; the note on what a run uses."""
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
    user_state = gr.State(None)
    return dict(own_data=own_data, own_images=own_images, own_text=own_text, data_zip=data_zip, data_text=data_text,
                data_txt=data_txt, data_note=data_note, user_state=user_state, collect=collected)


def build_settings(lab: Lab, s: dict[str, Any]) -> dict[str, Any]:
    """Step 2: method, rank, steps and seed; the advanced settings; the parameter counter."""
    method = gr.Radio(METHOD_CHOICES, value=s["method"], label="2 · Method",
                      info="SymLoRA: ΔW = s·Q·diag(Λ)·Qᵀ (about half of LoRA's weights). LoRA: ΔW = s·B·A. "
                           "Head only: train just the last layer. Full: train every weight.",
                      elem_id="method")
    r = gr.Slider(1, int(LIMITS["r"][1]), value=s["r"], step=1, label="Rank r",
                  info="How many directions each adapter may change. More = more weights.", elem_id="rank",
                  visible=s["method"] in ADAPTER_METHODS)
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
                               elem_id="alpha", visible=s["method"] in ADAPTER_METHODS)
        targets = gr.CheckboxGroup([], value=[], label="Target layers",
                                   info="Which layers get an adapter (× how many, in→out shape). SymLoRA lists "
                                        "only square layers or whole multiples (split into square blocks).",
                                   elem_id="targets", visible=s["method"] in ADAPTER_METHODS)
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
    return dict(method=method, r=r, steps=steps, seed=seed, dice=dice, advanced=advanced, model=model, data=data,
                lora_alpha=lora_alpha, targets=targets, targets_text=targets_text, lr=lr, batch_size=batch_size,
                device=device, param_md=param_md, param_plot=param_plot)


def build_run_control(lab: Lab) -> dict[str, Any]:
    """Start and Stop; Pause, Step and Reset; the status line."""
    with gr.Row():
        start = gr.Button("▶ Start training", variant="primary", elem_id="start")
        stop = gr.Button("■ Stop", variant="stop", elem_id="stop")
    with gr.Row():
        pause = gr.Button(PAUSE_LABEL, size="sm", min_width=80, elem_id="pause")
        step = gr.Button(STEP_LABEL, size="sm", min_width=80, elem_id="step")
        reset = gr.Button("↺ Reset", size="sm", min_width=80, elem_id="reset")
    status = gr.Markdown("Press **Start** to fine-tune the pretrained model. " + lab.device_note(),
                         label="Status", elem_id="status", min_height=60)
    return dict(start=start, stop=stop, pause=pause, step=step, reset=reset, status=status)


def build_plots(s: dict[str, Any]) -> dict[str, Any]:
    """The run's plots, each with what it shows: curves, memory, the spectrum of ΔW over
    time; the raw event."""
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
    return dict(curves=curves, memory=memory, spectrum=spectrum, spec_slider=spec_slider, spec_note=spec_note,
                event_json=event_json)


def build_share(lab: Lab) -> dict[str, Any]:
    """The "Share this setup" box: lesson options, the Make link button and the link."""
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
    return dict(share_box=share_box, lesson_on=lesson_on, lesson_panels=lesson_panels, lesson_presets=lesson_presets,
                share_note=share_note, make_link=make_link, link=link)


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
LIGHT = dict(concurrency_id="light", concurrency_limit=4, api_visibility="private", show_progress="hidden")
USER_DATA = dict(concurrency_id="userdata", concurrency_limit=2, api_visibility="private", show_progress="hidden")
CONTROL = dict(queue=False, api_visibility="private", show_progress="hidden")  # pause / step: answered at once


@dataclass
class Wired:
    """What other parts of the page need from the Train tab's wiring: the run event, and
    the two views that follow the settings (the parameter counter; the own-data widgets)."""

    update_params: Callable[..., Any]
    param_inputs: list[Any]
    param_outputs: list[Any]
    data_view: Callable[..., Any]
    data_view_inputs: list[Any]
    data_outputs: list[Any]
    train_event: Any = None

    def then_params(self, event: Any) -> Any:
        """After ``event``: refresh the parameter counter."""
        return event.then(self.update_params, self.param_inputs, self.param_outputs, **LIGHT)

    def after_data(self, event: Any) -> Any:
        """After ``event``: refresh the own-data widgets, then the parameter counter."""
        return self.then_params(event.then(self.data_view, self.data_view_inputs, self.data_outputs, **USER_DATA))


def wire(lab: Lab, t: TrainUI, runs_state: Any, try_run: Any) -> Wired:
    """Connect the Train tab's events, concern by concern (``try_run``: the Try tab's run
    dropdown, which a finished run updates)."""
    wired = views(lab, t)
    wire_own_data(lab, t, wired)
    wire_presets(lab, t, wired)
    wired.train_event = wire_run(lab, t, runs_state, try_run)
    wire_plots(t)
    wire_reset(lab, t, wired)
    return wired


def views(lab: Lab, t: TrainUI) -> Wired:
    """The parameter counter and the own-data view, as handlers other events chain to."""

    def update_params(model, data, method, r, targets, user=None):
        classes = len(user["classes"]) if user and user.get("classes") else None
        return param_view(lab, model, data, method, r, targets, classes)

    def data_view(model, zip_path, text, seed):
        """Which upload fits the model, and what data a run will use (a bad zip is
        cleared with a warning, so the next run uses the preset's data)."""
        return own_data_view(lab, model, zip_path, text, seed)

    return Wired(update_params=update_params, param_inputs=[t.model, t.data, t.method, t.r, t.targets, t.user_state],
                 param_outputs=[t.param_md, t.param_plot], data_view=data_view,
                 data_view_inputs=[t.model, t.data_zip, t.data_text, t.seed],
                 data_outputs=[t.data_zip, t.own_data, t.own_images, t.own_text, t.data_note, t.share_note, t.user_state])


# -- the user's own data -------------------------------------------------------------
def wire_own_data(lab: Lab, t: TrainUI, wired: Wired) -> None:
    """A zip, pasted text or a .txt file replaces the preset's data; the note says what a
    run will use."""
    wired.after_data(t.data_zip.upload(lambda: gr.update(value="Checking your zip…", visible=True), None, t.data_note,
                                       queue=False, show_progress="hidden", api_visibility="private"))
    wired.then_params(t.data_zip.clear(wired.data_view, wired.data_view_inputs, wired.data_outputs, **USER_DATA))
    wired.then_params(t.data_text.change(wired.data_view, wired.data_view_inputs, wired.data_outputs,
                                         trigger_mode="always_last", **USER_DATA))

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

    t.data_txt.upload(on_txt, t.data_txt, [t.data_txt, t.data_text], **USER_DATA)
    collect.wire(lab, t.collect, t.data_zip, wired.after_data)


# -- presets and method ----------------------------------------------------------------
def preset_outputs(t: TrainUI) -> list[Any]:
    """The controls a preset sets (and its description)."""
    return [t.preset_info, t.model, t.data, t.method, t.r, t.lora_alpha, t.targets, t.lr, t.steps, t.batch_size, t.seed]


def preset_values(lab: Lab, t: TrainUI, name: str) -> dict[Any, Any]:
    """The preset's values for :func:`preset_outputs`."""
    p = lab.preset(name)
    config = lab.default_config(p.name)
    s, adapter = ui_values_from(config), config.uses_adapter
    try:
        tgt = target_update(lab, s["model"], s["method"], config.adapter.target_modules)
    except Exception as err:  # noqa: BLE001 — e.g. an online-only model offline
        gr.Warning(readable(err))
        tgt = gr.update(choices=[], value=[], visible=adapter)
    return {
        t.preset_info: preset_description(lab, p), t.model: s["model"],
        t.data: gr.update(choices=lab.data_choices(s["model"]), value=s["data"]), t.method: s["method"],
        t.r: gr.update(value=s["r"], visible=adapter), t.lora_alpha: gr.update(value=s["lora_alpha"], visible=adapter),
        t.targets: tgt, t.lr: s["lr"], t.steps: s["steps"], t.batch_size: s["batch_size"], t.seed: s["seed"],
    }


def wire_presets(lab: Lab, t: TrainUI, wired: Wired) -> None:
    """A preset sets every control; model and method set which layers can be targeted;
    any change refreshes the parameter counter."""

    def on_preset_shown(name):
        """Switch presets, first saying what happens when the model is not loaded yet
        (a language model takes seconds the first time: nothing else would show it)."""
        p = lab.preset(name)
        loaded = p.model in lab.bases.loaded_models()
        if not loaded:
            yield {t.preset_info: preset_description(lab, p), t.status: preparing_note(lab, p.model)}
        out = preset_values(lab, t, name)
        if not loaded:
            out[t.status] = f"**{p.name}** is ready. Press **Start** to train."
        yield out

    wired.after_data(t.preset.input(on_preset_shown, t.preset, preset_outputs(t) + [t.status], **LIGHT))

    def on_model(model, method, targets):
        try:
            tgt = target_update(lab, model, method, targets)
        except Exception as err:  # noqa: BLE001
            raise page_error(err) from err
        choices = lab.data_choices(model)
        return gr.update(choices=choices, value=choices[0] if choices else None), tgt

    wired.after_data(t.model.input(on_model, [t.model, t.method, t.targets], [t.data, t.targets], **LIGHT))

    def on_method(model, method, targets, preset, lr):
        """Targets and rank follow the method; so does the learning rate while it is one of
        the preset's own (each method at its best rate), never a rate the user typed."""
        adapter = method in ("symlora", "lora")
        p = lab.preset(preset)
        preset_rates = {p.lr_for(m) for m in (*p.method_lr, None)}
        new_lr = gr.update(value=p.lr_for(method)) if lr in preset_rates else gr.update()
        return (target_update(lab, model, method, targets), gr.update(visible=adapter), gr.update(visible=adapter),
                new_lr)

    wired.then_params(t.method.input(on_method, [t.model, t.method, t.targets, t.preset, t.lr],
                                     [t.targets, t.r, t.lora_alpha, t.lr], **LIGHT))
    for comp in (t.data, t.targets):
        comp.input(wired.update_params, wired.param_inputs, wired.param_outputs, **LIGHT)
    t.targets.change(None, t.targets, t.targets_text, js="(v) => (v || []).join(',')", queue=False,
                     show_progress="hidden")
    t.r.release(wired.update_params, wired.param_inputs, wired.param_outputs, **LIGHT)
    t.dice.click(lambda: random.randint(0, 99_999), None, t.seed, **LIGHT)


# -- run control: start, stop, pause, step ----------------------------------------------
def wire_run(lab: Lab, t: TrainUI, runs_state: Any, try_run: Any) -> Any:
    """Start is the ``/train`` endpoint; Stop ends the run (or cancels it in the queue);
    Pause and Step hold it between steps.  Returns the run event."""
    outputs = t.outputs + [t.spectra_state, runs_state, try_run]
    control = RunControl(lab, "train", "run", (gr.skip(),) * (len(outputs) - 1))

    def train(preset: str, model: str, data: str, method: str, r: float, lora_alpha: float, targets: str,
              lr: float, steps: float, batch_size: float, seed: float, device: str, data_zip: str | None = None,
              data_text: str = "", runs: dict | None = None, request: gr.Request = None):
        """Fine-tune ``model`` on ``data`` with ``method`` (symlora, lora, head-only, full) and stream the run.
        ``targets``: comma-separated layer kinds such as ``attn.qkv,attn.proj`` (empty: the model's default).
        Your own data replaces ``data``: ``data_zip`` (image models) is a .zip with one folder of images per
        class; ``data_text`` (language models) is text: one piece per line, or pieces separated by blank lines or ``%`` lines."""
        settings = read_settings([preset, model, data, method, r, lora_alpha, targets, lr, steps, batch_size, seed,
                                  device])
        yield from control.start(request, lambda session, flag: train_updates(
            lab, control, settings, runs or {}, session, flag, data_zip, data_text or ""))

    train_event = t.start.click(
        train, t.controls + t.data_inputs + [runs_state], outputs, api_name="train",
        api_description="Fine-tune with the given settings; streams status, plots and the raw event (JSON) "
                        "a few times a second. The last update carries the final result. Optional own data "
                        "replaces the preset's: data_zip (a .zip with one folder of images per class, for image "
                        "models) or data_text (one piece per line, or pieces separated by blank lines or '%' lines, for language models).",
        concurrency_id="heavy", concurrency_limit=lab.heavy_limit, show_progress="full", show_progress_on=[t.status],
    )
    control.wire_stop(t.stop, outputs, train_event).then(lambda: PAUSE_LABEL, None, t.pause, **CONTROL)
    wire_pause(t, control)
    return train_event


def wire_pause(t: TrainUI, control: RunControl) -> None:
    """Pause / Resume and Step: the run waits before its next step (Stop still ends it)."""

    def pause(request: gr.Request):
        flag = control.current(request)
        if flag is None:
            return PAUSE_LABEL, "Nothing is running: press **Start** first."
        if flag.paused:
            flag.resume()
            return PAUSE_LABEL, flag.last_status or gr.skip()
        flag.pause()
        return RESUME_LABEL, PAUSED + "  \n" + flag.last_status

    def step(request: gr.Request):
        flag = control.current(request)
        if flag is None:
            return PAUSE_LABEL, f"Nothing is running: press **Start**, then **{PAUSE_LABEL}** and **{STEP_LABEL}** through it."
        if not flag.paused:  # first press: stop where it is, the next ones step
            flag.pause()
            return RESUME_LABEL, PAUSED + "  \n" + flag.last_status
        flag.step()
        return gr.skip(), gr.skip()

    t.pause.click(pause, None, [t.pause, t.status], **CONTROL)
    t.step.click(step, None, [t.pause, t.status], **CONTROL)
    t.start.click(lambda: PAUSE_LABEL, None, t.pause, **CONTROL)


def train_updates(lab: Lab, control: RunControl, settings: RunConfig, runs: dict, session: str, flag: Any,
                  zip_path: Any = None, text: str = "") -> Iterator[Update]:
    """The run as page updates (in the Job's worker thread): status, curves, memory,
    spectrum and its slider, spectrum note, raw event, spectra state; the last one also the
    session's runs and the Try tab's choices."""
    skips = control.skips
    label = run_label(settings)
    yield Update((f"Preparing **{label}** (loading the model and data)…",) + skips)
    user = lab.user_data.resolve(lab.model_task(settings.model), zip_path, text, settings.seed)
    who = ""
    if user is not None:
        label, who = f"{label} · {user.name}", f"your data “{user.name}”"
        yield Update((f"Preparing **{label}** on your data ({user.summary()})…",) + skips)
    view = LiveView(lab, label, settings.method, settings.steps)
    for event, tracker, emit in stream(settings, data=user.splits if user else None, stop=flag, label=label):
        if not view.due(event, emit, flag.paused):
            continue
        spec_fig, slider = view.spectrum(tracker, event.is_final)
        memory_fig = view.memory(event)
        status = flag.last_status = status_line(event, who) + tracker.note
        if flag.paused and not event.is_final:
            status = PAUSED + "  \n" + status
        shown = (status, curves_view(tracker.curve, event.metric_name), memory_fig, spec_fig, slider)
        raw, state = event.to_dict(), {"method": settings.method, "spectra": list(tracker.spectra)}
        if not event.is_final:
            yield Update(shown + (gr.skip(), raw, state, gr.skip(), gr.skip()))
            continue
        result = event.result
        note = symmetry_note(tracker.bundle, settings.method, tracker.symmetry)
        runs = control.keep(session, runs, label, settings, result, tracker, user)
        final = shown + (EXPLAIN_SPECTRUM + "\n\n" + note, raw, state, runs, run_choices(runs))
        control.finished(session, flag, final)  # before yielding: Stop may be waiting
        warning = (event.message or "the run ended with an error") if event.kind == "error" else None
        yield Update(final, warning)


# -- plots and reset -------------------------------------------------------------------
def wire_plots(t: TrainUI) -> None:
    """The spectrum's slider goes back in time through the run's snapshots."""

    def on_spec_slider(index, state):
        fig, _ = spectrum_view(state.get("spectra", []), state.get("method", "symlora"), index)
        return fig

    t.spec_slider.release(on_spec_slider, [t.spec_slider, t.spectra_state], t.spectrum, **LIGHT)


def wire_reset(lab: Lab, t: TrainUI, wired: Wired) -> None:
    """Reset stops the session's runs and puts the preset's settings and empty plots back."""
    outputs = preset_outputs(t) + [t.status, t.curves, t.memory, t.spectrum, t.spec_slider, t.spec_note,
                                   t.event_json, t.spectra_state, t.device, t.pause]

    def reset(preset, request: gr.Request):
        lab.runs.stop(session_of(request))
        out = preset_values(lab, t, preset)
        s = lab.default_config(preset)
        out.update({
            t.status: "Settings reset to the preset. Press **Start** to train.",
            t.curves: plots.curves_figure([]), t.memory: plots.memory_figure([]),
            t.spectrum: plots.spectrum_figure(None, s.method),
            t.spec_slider: gr.update(minimum=0, maximum=1, value=0, interactive=False),
            t.spec_note: EXPLAIN_SPECTRUM, t.event_json: None,
            t.spectra_state: {"method": s.method, "spectra": []}, t.device: "auto", t.pause: PAUSE_LABEL,
        })
        return out

    wired.after_data(t.reset.click(reset, t.preset, outputs, cancels=[wired.train_event], api_visibility="private",
                                   concurrency_limit=None, show_progress="hidden"))
