"""The Try tab: the base model and the tuned model side by side, downloads, merge check.

Vision runs: draw on a sketchpad, upload an image, or take a random test image; both
models' top-5 classes are shown.  Text runs: a prompt, and both models' continuations.
``/predict`` (public) classifies one image with the session's latest run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from symlora.lab.resources import asset_path

from .analysis import adapter_downloads, merge_check
from .checks import MAX_PROMPT_CHARS, MAX_PROMPT_TOKENS, prompt_note
from .errors import as_markdown_text, page_error
from .lab import Lab
from .runner import format_metric
from .sessions import SavedRun

LATEST = "Latest run"
CANVAS = 280
EXAMPLES_DIR = asset_path("examples")  # the checkout's assets/ or the installed symlora_assets


def example_images() -> list[str]:
    """The shipped example pictures (``assets/examples``), digits first."""
    if not EXAMPLES_DIR.is_dir():
        return []
    return [str(p) for p in sorted(EXAMPLES_DIR.glob("*.png"))]


def shipped_gallery() -> list[tuple[str, str]]:
    """(path, caption) of the shipped examples: ``digit-7.png`` → "digit 7"."""
    return [(p, Path(p).stem.replace("fashion-", "").replace("-", " ")) for p in example_images()]


OWN_EXAMPLES = 15  # of the user's own test images, shown as examples


def own_gallery(test: Any, n: int = OWN_EXAMPLES) -> list[tuple[np.ndarray, str]]:
    """Up to ``n`` of a run's own test images (an ``ImageDataset``), classes taking turns,
    each captioned with its class."""
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(test.labels.tolist()):
        by_class.setdefault(int(label), []).append(i)
    order: list[int] = []
    while len(order) < n and any(by_class.values()):
        for label in sorted(by_class):
            if by_class[label] and len(order) < n:
                order.append(by_class[label].pop(0))
    return [(show_big(test.images[i].numpy()), test.classes[int(test.labels[i])]) for i in order]


def show_big(img: np.ndarray, side: int = 224) -> np.ndarray:
    """A small uint8 image (H, W[, 1|3]) enlarged by whole pixels, for people to see."""
    img = img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img
    zoom = max(1, side // img.shape[0])
    return np.kron(img, np.ones((zoom, zoom) + (() if img.ndim == 2 else (1,)), dtype=np.uint8))


@dataclass
class TryUI:
    """The Try tab's components (built by keywords in :func:`build`)."""

    run: gr.Dropdown
    note: gr.Markdown
    # image models: draw, upload, a test image or an example; both models' top classes
    vision: gr.Group
    sketch: gr.Sketchpad
    image: gr.Image
    sample: gr.Button
    truth: gr.Markdown
    gallery: gr.Gallery
    base_label: gr.Label
    tuned_label: gr.Label
    probs: gr.JSON
    # language models: a prompt, both models' continuations
    text: gr.Group
    prompt: gr.Textbox
    temperature: gr.Slider
    max_tokens: gr.Slider
    gen_seed: gr.Number
    generate: gr.Button
    base_text: gr.Textbox
    tuned_text: gr.Textbox
    # downloads and the merge check
    downloads: gr.Accordion
    prepare: gr.Button
    merge: gr.Button
    adapter_file: gr.File
    peft_file: gr.File
    merge_md: gr.Markdown


def blank_canvas(dark: bool = True) -> dict[str, Any]:
    """An empty sketchpad: black for light-on-dark data (digits and clothes in our
    presets), white for dark-on-light data (letters on paper)."""
    fill = np.full((CANVAS, CANVAS, 3), 0 if dark else 255, dtype=np.uint8)
    return {"background": fill, "layers": [], "composite": fill}


def sketch_style(dark: bool) -> dict[str, Any]:
    """The sketchpad's canvas, pen and hint for the data's style (a ``gr.update`` dict)."""
    pen = "#ffffff" if dark else "#000000"
    hint = "white on black, like the data" if dark else "black on white, like the data"
    return gr.update(value=blank_canvas(dark), label=f"Draw here ({hint})",
                     brush=gr.Brush(colors=[pen], default_color=pen, default_size=18))


def build(lab: Lab) -> TryUI:
    """Lay out the Try tab (call inside ``gr.Tab``)."""
    with gr.Row():
        run = gr.Dropdown([LATEST], value=LATEST, label="Tuned model", allow_custom_value=True, elem_id="try-run",
                          info="Which of your runs to try (your last four are kept for an hour).", scale=2)
        note = gr.Markdown("Train a model on the **Train** tab first; until then only the base model answers.",
                           elem_id="try-note")
    with gr.Group(visible=True) as vision:
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                with gr.Tab("Draw", elem_id="try-draw-tab"):
                    sketch = gr.Sketchpad(value=blank_canvas(), label="Draw here (white on black, like the data)",
                                          canvas_size=(CANVAS, CANVAS), image_mode="RGB", type="numpy",
                                          brush=gr.Brush(colors=["#ffffff"], default_color="#ffffff", default_size=18),
                                          elem_id="try-sketch", layers=False)
                with gr.Tab("Upload", elem_id="try-upload-tab"):
                    image = gr.Image(type="numpy", image_mode="RGB", label="An image", sources=["upload", "clipboard"],
                                     elem_id="try-image", height=300)
                    sample = gr.Button("Random test image", elem_id="try-sample")
                    truth = gr.Markdown(elem_id="try-truth")
                    gallery = gr.Gallery(shipped_gallery(), label="Examples (click one)", columns=5, rows=3,
                                         height=360, allow_preview=False, object_fit="contain",
                                         elem_id="try-examples")
            with gr.Column(scale=1):
                base_label = gr.Label(num_top_classes=5, label="Base model (pretrained, before)", elem_id="try-base")
                tuned_label = gr.Label(num_top_classes=5, label="Tuned model (after)", elem_id="try-tuned")
                probs = gr.JSON(visible=False, label="probabilities")  # every class, for API clients
    with gr.Group(visible=False) as text:
        prompt = gr.Textbox("Captain's log, stardate", label="Prompt", elem_id="try-prompt", lines=2,
                            info="Both models continue this text.", max_length=MAX_PROMPT_CHARS)
        with gr.Row():
            temperature = gr.Slider(0, 1.5, value=0.8, step=0.05, label="Temperature",
                                    info="0 = always the most likely word; higher = more surprising.")
            max_tokens = gr.Slider(5, 120, value=40, step=1, label="Length (tokens)", info="How much to write.")
            gen_seed = gr.Number(0, precision=0, label="Sampling seed", info="Same seed → same text.")
        generate = gr.Button("Generate", variant="primary", elem_id="try-generate")
        with gr.Row():
            base_text = gr.Textbox(label="Base model (before)", lines=5, interactive=False, elem_id="try-base-text")
            tuned_text = gr.Textbox(label="Tuned model (after)", lines=5, interactive=False, elem_id="try-tuned-text")
    with gr.Accordion("Take it home: downloads and the merge check", open=False) as downloads:
        gr.Markdown("The adapter in this library's format (`adapter_config.json` + `adapter_model.safetensors`), and "
                    "the same update exported as a **plain PEFT LoRA** that PEFT, diffusers or vLLM load as-is "
                    "(A = Qᵀ, B = s·Q·diag(Λ)). The merge check folds ΔW into W and compares.")
        with gr.Row():
            prepare = gr.Button("Prepare downloads", elem_id="try-prepare")
            merge = gr.Button("Check merge", elem_id="try-merge")
        with gr.Row():
            adapter_file = gr.File(label="Adapter (symlora format)", elem_id="try-adapter-file")
            peft_file = gr.File(label="PEFT LoRA export", elem_id="try-peft-file")
        merge_md = gr.Markdown(elem_id="try-merge-md")
    return TryUI(run=run, note=note, vision=vision, sketch=sketch, image=image, sample=sample, truth=truth,
                 gallery=gallery, base_label=base_label, tuned_label=tuned_label, probs=probs, text=text, prompt=prompt,
                 temperature=temperature, max_tokens=max_tokens, gen_seed=gen_seed, generate=generate,
                 base_text=base_text, tuned_text=tuned_text, downloads=downloads, prepare=prepare, merge=merge,
                 adapter_file=adapter_file, peft_file=peft_file, merge_md=merge_md)


# --------------------------------------------------------------------------- helpers
def pick_run(runs: dict[str, SavedRun] | None, choice: str | None) -> SavedRun | None:
    """The run named ``choice`` (or the newest for "Latest run" / an unknown name)."""
    if not runs:
        return None
    if choice in runs:
        return runs[choice]
    return list(runs.values())[-1]


def failure_note(saved: SavedRun) -> str:
    """Why a run is not offered (it diverged or failed), for the Try tab's note."""
    return (f"⚠ **{as_markdown_text(saved.label)} cannot be tried or downloaded:** "
            f"{as_markdown_text(saved.failure or 'it failed')}.")


def as_label(pairs: list[tuple[str, float]]) -> dict[str, float]:
    return {label: float(p) for label, p in pairs}


def sketch_image(value: Any) -> np.ndarray | None:
    """The drawn picture from a Sketchpad value, or ``None`` when nothing is drawn."""
    if value is None:
        return None
    img = value.get("composite") if isinstance(value, dict) else value
    if img is None:
        return None
    img = np.asarray(img)
    if img.size == 0 or int(img[..., :3].max()) == 0:
        return None
    return img


def match_background(image: np.ndarray, dark: bool) -> np.ndarray:
    """Invert a picture whose background is the opposite of the data's (a photo of a digit
    on paper for light-on-dark data, a drawing on black for dark-on-light data), so that
    what the model sees resembles what it was trained on."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]
    border = np.concatenate([img[0].ravel(), img[-1].ravel(), img[:, 0].ravel(), img[:, -1].ravel()])
    if (dark and border.mean() > 127) or (not dark and border.mean() < 128):
        return (255 - img.astype(np.int16)).astype(np.uint8)
    return img


def test_images(lab: Lab, saved: SavedRun) -> Any:
    """The test set a run was measured on (an ``ImageDataset``): a sample of the user's own
    images when it trained on them, else its dataset's test split."""
    if saved.test_sample is not None:
        return saved.test_sample
    return lab.bases.dataset(saved.config.data, saved.config.seed).test


def dark_data(lab: Lab, saved: SavedRun) -> bool:
    """Whether the run's images are light objects on a dark background."""
    try:
        images = test_images(lab, saved).images[:64]
    except Exception:  # noqa: BLE001
        return True
    return is_dark(images)


def is_dark(images: Any) -> bool:
    """Light-on-dark images (MNIST style) rather than dark-on-light (ink on paper): their
    border pixels average below mid-grey.  ``images``: uint8 (N, H, W[, C])."""
    import torch

    x = torch.as_tensor(images).float()
    x = x.unsqueeze(-1) if x.ndim == 3 else x
    border = torch.cat([x[:, 0].flatten(1), x[:, -1].flatten(1), x[:, :, 0].flatten(1), x[:, :, -1].flatten(1)], 1)
    return bool(border.mean() < 128)


def download_name(saved: SavedRun) -> str:
    """The start of a run's download names: the data it trained on, method and rank —
    ``digits-symlora-r8`` for a preset, ``my-letters-lora-r4`` for ``my-letters.zip``."""
    import re

    s = saved.config
    data = s.preset
    if saved.data_name:
        data = re.sub(r"[^a-z0-9]+", "-", Path(saved.data_name).stem.lower()).strip("-")[:40] or "my-data"
    rank = f"-r{s.adapter.r}" if s.uses_adapter else ""
    return f"{data}-{s.method}{rank}"


def card_context(lab: Lab, saved: SavedRun) -> dict[str, Any]:
    """What a download's model card says about the run: data, metrics, settings."""
    s = saved.summary
    return {"data": saved.data_label, "preset": saved.config.preset, "metric_name": s.get("metric_name"),
            "metric_before": s.get("metric_before"), "metric_after": s.get("metric_after"),
            "steps": s.get("steps_done"), "seed": saved.config.seed, "lr": saved.config.lr}


# --------------------------------------------------------------------------- wiring
INFER = dict(concurrency_id="infer", concurrency_limit=2)  # one image through a small ViT: milliseconds


def heavy(lab: Lab) -> dict[str, Any]:
    """Seconds of CPU: these share the trainings' slots (app.fair counts them)."""
    return dict(concurrency_id="heavy", concurrency_limit=lab.heavy_limit)


def wire(lab: Lab, t: TryUI, runs_state: Any, default_model: Any) -> tuple[Any, list[Any], list[Any]]:
    """Connect the Try tab (``default_model``: the Train tab's model dropdown, the base
    model before any run); returns ``(fn, inputs, outputs)`` that refreshes the tab after a run."""
    wire_images(lab, t, runs_state, default_model)
    wire_text(lab, t, runs_state, default_model)
    wire_downloads(lab, t, runs_state)
    refresh = wire_run_choice(lab, t, runs_state, default_model)
    wire_examples(t, runs_state)
    return refresh


def wire_images(lab: Lab, t: TryUI, runs_state: Any, default_model: Any) -> None:
    """An image (uploaded, drawn or a random test image) goes through both models:
    ``/predict``."""

    def classify_both(image: Any, run: str, runs: dict, model: str):
        """Top classes of ``image`` from the base model and from the session's tuned model
        (``run``: "Latest run" or a run's name; ``model``: the base to use before any run)."""
        from symlora.lab.predict import classify

        if image is None:
            return None, None, None, "Draw, upload or sample an image first."
        saved = pick_run(runs, run)
        model_name = saved.config.model if saved else model
        try:
            base = lab.bases.model(model_name)
            if not hasattr(base, "labels"):
                return None, None, None, "This run is a language model: use the prompt box."
            dark = dark_data(lab, saved) if saved else True
            image = match_background(image, dark)
            base_out = as_label(classify(base, image, k=len(base.labels)))
            if saved is None:
                return base_out, None, {"base": base_out, "tuned": None}, "No tuned model yet: train one on the **Train** tab."
            if saved.failure:
                return base_out, None, {"base": base_out, "tuned": None}, failure_note(saved)
            tuned = lab.tuned.get(saved, lab.bases)
            tuned_out = as_label(classify(tuned, image, k=len(tuned.labels)))
        except Exception as err:  # noqa: BLE001
            raise page_error(err) from err
        return (base_out, tuned_out, {"base": base_out, "tuned": tuned_out},
                f"Tuned model: **{saved.label}** (trained on {saved.data_label}).")

    outs = [t.base_label, t.tuned_label, t.probs, t.note]
    t.image.change(classify_both, [t.image, t.run, runs_state, default_model], outs, api_name="predict",
                   api_description="Classify an image with the pretrained base model and with this session's "
                                   "tuned model (after /train): two {label, confidences} dicts and a note.",
                   **INFER)
    t.sketch.input(lambda v, *a: classify_both(sketch_image(v), *a) if sketch_image(v) is not None else (gr.skip(),) * 4,
                    [t.sketch, t.run, runs_state, default_model], outs, trigger_mode="always_last",
                    api_visibility="private", show_progress="hidden", **INFER)

    def sample(choice: str, runs: dict, model: str):
        saved = pick_run(runs, choice)
        if saved is None:
            raise page_error("Train a model first: the test images come from the run's data.")
        try:
            test = test_images(lab, saved)
        except Exception as err:  # noqa: BLE001
            raise page_error(err) from err
        if not hasattr(test, "images"):
            raise page_error("This run is a language model: use the prompt box.")
        i = random.randrange(len(test))
        img = show_big(test.images[i].numpy())
        truth = test.classes[int(test.labels[i])]
        return img, f"Test image #{i} of {saved.data_label}: the true answer is **{truth}**."

    t.sample.click(sample, [t.run, runs_state, default_model], [t.image, t.truth], api_visibility="private",
                   **INFER)  # the image's change event then classifies it
    t.image.upload(lambda: "", None, t.truth, api_visibility="private", queue=False, show_progress="hidden")


def wire_text(lab: Lab, t: TryUI, runs_state: Any, default_model: Any) -> None:
    """A prompt, continued by both language models: ``/generate``."""

    def generate_both(prompt: str, temperature: float, max_tokens: float, seed: float, choice: str, runs: dict,
                      model: str):
        from symlora.lab.predict import fit_prompt, generate
        from symlora.lab.threads import run_on

        from .lab import training_threads

        saved = pick_run(runs, choice)
        try:
            base = lab.bases.model(saved.config.model if saved else model)
            if not hasattr(base, "tokenizer"):
                raise page_error("This run classifies images: use the image tools.")
            kw = dict(max_new_tokens=int(max_tokens), temperature=float(temperature), seed=int(seed))
            ids, dropped = fit_prompt(base, (prompt or "")[-MAX_PROMPT_CHARS:], kw["max_new_tokens"], MAX_PROMPT_TOKENS)
            cut = dropped > 0 or len(prompt or "") > MAX_PROMPT_CHARS
            if cut:  # what the models read, and a note saying it was cut
                prompt = base.tokenizer.decode(ids, skip_special_tokens=True)
            note = prompt_note(len(ids)) + "  \n" if cut else ""

            def sample(bundle: Any) -> str:
                """A continuation, on the training threads' cores (this page's thread computes on one)."""
                return run_on(training_threads(), lambda: generate(bundle, prompt, max_prompt_tokens=MAX_PROMPT_TOKENS, **kw))

            base_out = prompt + sample(base)
            if saved is None:
                return base_out, "", note + "No tuned model yet: train one on the **Train** tab."
            if saved.failure:
                return base_out, "", note + failure_note(saved)
            tuned = lab.tuned.get(saved, lab.bases)
            return (base_out, prompt + sample(tuned),
                    note + f"Tuned model: **{saved.label}**.")
        except gr.Error:
            raise
        except Exception as err:  # noqa: BLE001
            raise page_error(err) from err

    t.generate.click(generate_both, [t.prompt, t.temperature, t.max_tokens, t.gen_seed, t.run, runs_state, default_model],
                     [t.base_text, t.tuned_text, t.note], api_name="generate",
                     api_description="Continue a prompt with the base and the tuned language model.", **heavy(lab))


def wire_downloads(lab: Lab, t: TryUI, runs_state: Any) -> None:
    """The adapter files to download, and the merge check."""

    def prepare(choice: str, runs: dict, request: gr.Request = None):
        saved = pick_run(runs, choice)
        if saved is None:
            raise page_error("Train a model first.")
        try:
            tuned = lab.tuned.get(saved, lab.bases)
            return adapter_downloads(tuned, download_name(saved), owner=getattr(request, "session_hash", None) or "",
                                     facts=card_context(lab, saved))
        except Exception as err:  # noqa: BLE001
            raise page_error(err) from err

    t.prepare.click(prepare, [t.run, runs_state], [t.adapter_file, t.peft_file], api_visibility="private", **heavy(lab))

    def check_merge(choice: str, runs: dict, prompt: str):
        saved = pick_run(runs, choice)
        if saved is None:
            raise page_error("Train a model first.")
        try:
            base = lab.bases.model(saved.config.model)
            tuned = lab.tuned.get(saved, lab.bases)
            if hasattr(tuned, "preprocess"):
                inputs = tuned.preprocess(test_images(lab, saved).images[:32]).cpu()
            else:
                inputs = tuned.encode([(prompt or "Hello")[:MAX_PROMPT_CHARS]], max_tokens=32)
                inputs = {k: v.cpu() for k, v in inputs.items() if k != "labels"}
            return merge_check(tuned, base, inputs)
        except Exception as err:  # noqa: BLE001
            raise page_error(err) from err

    t.merge.click(check_merge, [t.run, runs_state, t.prompt], t.merge_md, api_visibility="private", **heavy(lab))


def wire_run_choice(lab: Lab, t: TryUI, runs_state: Any, default_model: Any) -> tuple[Any, list[Any], list[Any]]:
    """Another run (or another base model) chosen: the tools for its kind of model, its
    sketchpad style and examples, and a note on it.  Returns the refresh for after a run."""

    def on_run(choice: str, runs: dict, model: str):
        saved = pick_run(runs, choice)
        name = saved.config.model if saved else model
        is_text = lab.model_task(name) == "text"
        sketch, gallery = gr.skip(), gr.skip()
        if not is_text:
            dark = dark_data(lab, saved) if saved else True
            sketch = sketch_style(dark)
            own = saved.test_sample if saved is not None and saved.test_sample is not None else None
            gallery = gr.update(value=own_gallery(own) if own is not None else shipped_gallery(),
                                label="Your test images (click one)" if own is not None else "Examples (click one)")
        if saved is None:
            note = "Train a model on the **Train** tab first; until then only the base model answers."
        elif saved.failure:
            note = failure_note(saved)
        else:
            s = saved.summary
            name = s["metric_name"]
            note = (f"Trying **{saved.label}**, trained on {saved.data_label}: {name} "
                    f"{format_metric(name, s['metric_before'])} → **{format_metric(name, s['metric_after'])}** "
                    f"after {s['steps_done']} steps.")
        return gr.update(visible=not is_text), gr.update(visible=is_text), note, sketch, gallery

    run_outputs = [t.vision, t.text, t.note, t.sketch, t.gallery]
    t.run.change(on_run, [t.run, runs_state, default_model], run_outputs, api_visibility="private",
                 show_progress="hidden")
    default_model.change(on_run, [t.run, runs_state, default_model], run_outputs,
                         api_visibility="private", show_progress="hidden")
    return on_run, [t.run, runs_state, default_model], run_outputs


def wire_examples(t: TryUI, runs_state: Any) -> None:
    """A click on an example (or on one of the user's test images) tries it."""

    def on_example(choice: str, runs: dict, evt: gr.SelectData):
        """A click on the examples: that image goes to the upload box (and is classified)."""
        saved = pick_run(runs, choice)
        i = int(evt.index if not isinstance(evt.index, (list, tuple)) else evt.index[0])
        if saved is not None and saved.test_sample is not None:
            items = own_gallery(saved.test_sample)
            if 0 <= i < len(items):
                img, label = items[i]
                return img, f"One of your test images: the true answer is **{label}**."
        paths = example_images()
        if not 0 <= i < len(paths):
            return gr.skip(), gr.skip()
        from PIL import Image

        with Image.open(paths[i]) as pic:
            return show_big(np.asarray(pic.convert("RGB"))), ""

    t.gallery.select(on_example, [t.run, runs_state], [t.image, t.truth], api_visibility="private", **INFER)
