"""Collect your own classes in the browser, the way Teachable Machine does it.

Name two or more classes, then add examples to each by drawing on a sketchpad, taking
webcam photos or uploading images; the counts and thumbnails show what you have.
**Use these classes** writes the collection as a zip of one folder per class and puts it
where an uploaded zip goes, so training, its limits, validation and messages, the Try
tab's classes and input style are exactly those of the zip path (``app.userdata``).

The collection lives in the session's ``gr.State`` as small PNGs (each example is
stored at the size training uses), bounded in classes, examples per class and bytes.
The pure functions at the top work on that state and are tested without a browser.
"""

from __future__ import annotations

import io
import re
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from .errors import readable
from .lab import Lab
from .userdata import Limits, file_path

MAX_CLASSES = 10
MAX_NAME = 40
ZIP_NAME = "my-classes.zip"
SHOWN = 40  # thumbnails shown (newest first)
KEEP_S = 3600  # collected zips older than this are deleted
SOURCES = ["Drawing", "Webcam", "Upload"]


@dataclass(frozen=True)
class Bounds:
    """How much one session may collect (from the upload limits, so that a collection
    always makes a zip the zip path accepts)."""

    classes: int
    per_class: int
    total: int
    bytes: int
    size: int

    @classmethod
    def from_limits(cls, limits: Limits) -> "Bounds":
        return cls(classes=MAX_CLASSES, per_class=max(2, limits.images // MAX_CLASSES), total=limits.images,
                   bytes=limits.zip_bytes // 2, size=limits.image_size)


def empty() -> dict[str, Any]:
    """A new collection: class names in order, each class's PNGs, the order examples came in."""
    return {"classes": [], "images": {}, "history": [], "bytes": 0}


def clean_name(name: str) -> str:
    """A class name that is also a safe folder name: trimmed, no slashes or leading dots."""
    name = re.sub(r"[\\/\x00-\x1f]+", " ", str(name or "")).strip().lstrip(".").strip()
    return re.sub(r"\s+", " ", name)[:MAX_NAME]


def add_class(state: dict[str, Any], name: str, bounds: Bounds) -> tuple[dict[str, Any], str | None]:
    """``(state, problem)``: the collection with a class ``name`` added, or unchanged
    with a sentence saying why not."""
    name = clean_name(name)
    if not name:
        return state, "type a name for the class first (for example “cat” or “circle”)"
    if any(c.lower() == name.lower() for c in state["classes"]):
        return state, f"there is already a class called “{name}”"
    if len(state["classes"]) >= bounds.classes:
        return state, f"at most {bounds.classes} classes can be collected here (use a zip for more)"
    state = {**state, "classes": state["classes"] + [name], "images": {**state["images"], name: []}}
    return state, None


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    grey = array.ndim == 2 or (array.ndim == 3 and (array[..., :1] == array).all())
    pic = Image.fromarray(array if array.ndim == 2 else (array[..., 0] if grey else array), "L" if grey else "RGB")
    buf = io.BytesIO()
    pic.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _from_picture(picture: Any, size: int) -> np.ndarray:
    """A numpy picture (sketch, webcam) at ``size``×``size``, the way the zip loader reads it."""
    from PIL import Image

    from symlora.lab.data import read_image

    arr = np.asarray(picture)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr[..., :3] if arr.ndim == 3 and arr.shape[-1] == 4 else arr).save(buf, format="PNG")
    return read_image(buf.getvalue(), "the picture", size=size)[0]


def add_examples(state: dict[str, Any], name: str | None, pictures: list[tuple[str, Any]],
                 bounds: Bounds) -> tuple[dict[str, Any], int, list[str]]:
    """Add ``pictures`` — ``(label, numpy array | file path)`` — to class ``name``.
    Returns ``(state, how many were added, problems)``; a picture that cannot be read,
    or one past a limit, is skipped with a sentence in ``problems``."""
    from symlora.lab.data import read_image

    if not name or name not in state["images"]:
        return state, 0, ["add a class first, then pick it under “Add examples to”"]
    images = {k: list(v) for k, v in state["images"].items()}
    history, used = list(state["history"]), int(state["bytes"])
    problems: list[str] = []
    added = 0
    for label, picture in pictures:
        count = sum(len(v) for v in images.values())
        if len(images[name]) >= bounds.per_class:
            problems.append(f"“{name}” has the most examples a class may have here ({bounds.per_class})")
            break
        if count >= bounds.total:
            problems.append(f"the collection holds the most examples allowed ({bounds.total:,})")
            break
        try:
            if isinstance(picture, (str, Path)):
                path = Path(picture)
                if path.stat().st_size > bounds.bytes:
                    raise ValueError(f"{label} is too large ({path.stat().st_size / 1e6:.1f} MB)")
                array = read_image(path.read_bytes(), label, size=bounds.size)[0]
            else:
                array = _from_picture(picture, bounds.size)
        except (ValueError, OSError) as err:
            problems.append(readable(err) if isinstance(err, ValueError) else f"{label} could not be read")
            continue
        png = _png(array)
        if used + len(png) > bounds.bytes:
            problems.append(f"the collection reached its size limit ({bounds.bytes / 1e6:.0f} MB)")
            break
        images[name].append(png)
        history.append(name)
        used += len(png)
        added += 1
    return {**state, "images": images, "history": history, "bytes": used}, added, problems


def undo(state: dict[str, Any]) -> dict[str, Any]:
    """The collection without its most recent example."""
    if not state["history"]:
        return state
    history = list(state["history"])
    name = history.pop()
    images = {k: list(v) for k, v in state["images"].items()}
    removed = images[name].pop() if images.get(name) else b""
    return {**state, "images": images, "history": history, "bytes": state["bytes"] - len(removed)}


def problems_for_training(state: dict[str, Any]) -> list[str]:
    """What is missing before the collection can train (the zip path's own rules)."""
    problems = []
    if len(state["classes"]) < 2:
        problems.append("name at least 2 classes")
    thin = [c for c in state["classes"] if len(state["images"].get(c, [])) < 2]
    if thin:
        problems.append("give every class at least 2 examples (" + ", ".join(f"“{c}”" for c in thin) + " need more)")
    return problems


def counts_markdown(state: dict[str, Any], bounds: Bounds) -> str:
    """``**circle** 5 · **square** 4`` and what is still missing."""
    if not state["classes"]:
        return ("No classes yet: type a name and press **Add class** (at least 2 classes, each with at least "
                "2 examples).")
    counts = " · ".join(f"**{c}** {len(state['images'].get(c, []))}" for c in state["classes"])
    missing = problems_for_training(state)
    total = sum(len(v) for v in state["images"].values())
    tail = (f"To train: {'; '.join(missing)}." if missing else
            "Ready: press **Use these classes**, then **▶ Start training**.")
    return (f"{counts} — {total} examples (up to {bounds.per_class} per class, {bounds.classes} classes).  \n"
            + tail)


def thumbnails(state: dict[str, Any], shown: int = SHOWN) -> list[tuple[np.ndarray, str]]:
    """The newest ``shown`` examples, captioned with their class."""
    from PIL import Image

    seen: dict[str, int] = {}
    items = []
    for name in state["history"]:
        seen[name] = seen.get(name, 0) + 1
        items.append((name, seen[name] - 1))
    out = []
    for name, i in reversed(items[-shown:]):
        pngs = state["images"].get(name, [])
        if i < len(pngs):
            with Image.open(io.BytesIO(pngs[i])) as pic:
                out.append((np.asarray(pic.convert("RGB")), name))
    return out


def _zips_dir() -> Path:
    root = Path(tempfile.gettempdir()) / "symlora-lab-collected"
    root.mkdir(exist_ok=True)
    cutoff = time.time() - KEEP_S
    for old in root.iterdir():
        try:
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    return root


def write_zip(state: dict[str, Any], directory: Path | None = None) -> Path:
    """The collection as ``my-classes.zip``: one folder of PNGs per class."""
    directory = directory or Path(tempfile.mkdtemp(prefix="c-", dir=_zips_dir()))
    path = Path(directory) / ZIP_NAME
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in state["classes"]:
            for i, png in enumerate(state["images"].get(name, [])):
                zf.writestr(f"{name}/{i + 1:04d}.png", png)
    return path


# --------------------------------------------------------------------------- page
HELP = ("**Teach it your own classes, right here.** 1 · Name a class and press **Add class** (at least 2). "
        "2 · Pick a class under *Add examples to*, then draw and press **Add drawing**, take webcam photos, or "
        "upload pictures (at least 2 per class; more is better). 3 · Press **Use these classes**, then "
        "**▶ Start training**. The **Try** tab then offers your classes and your test pictures. Your examples stay "
        "in this browser tab's session (about an hour).")


@dataclass
class CollectUI:
    state: Any
    name: Any
    add_class: Any
    target: Any
    sketch: Any
    add_sketch: Any
    webcam: Any
    files: Any
    counts: Any
    gallery: Any
    undo: Any
    clear: Any
    use: Any


def build(lab: Lab) -> CollectUI:
    """Lay out the collection (call inside the Train tab's own-images group)."""
    from .tab_try import CANVAS, blank_canvas

    bounds = Bounds.from_limits(lab.user_data.limits)
    state = gr.State(empty(), time_to_live=3600)
    gr.Markdown(HELP, elem_id="collect-help", padding=True)
    with gr.Row(equal_height=True):
        name = gr.Textbox(label="New class", placeholder="e.g. circle", max_length=MAX_NAME, scale=3,
                          elem_id="collect-name")
        add = gr.Button("Add class", scale=1, elem_id="collect-add-class")
    target = gr.Radio([], label="Add examples to", elem_id="collect-target",
                      info="The class your next drawings, photos and uploads go to.")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=300):
            source = gr.Radio(SOURCES, value=SOURCES[0], label="Add examples by", elem_id="collect-source")
            with gr.Column() as draw_box:
                sketch = gr.Sketchpad(value=blank_canvas(), label="Draw one example (white on black)",
                                      canvas_size=(CANVAS, CANVAS), image_mode="RGB", type="numpy", layers=False,
                                      brush=gr.Brush(colors=["#ffffff"], default_color="#ffffff", default_size=18),
                                      elem_id="collect-sketch")
                add_sketch = gr.Button("Add drawing", variant="secondary", elem_id="collect-add-sketch")
            with gr.Column(visible=False) as webcam_box:
                webcam = gr.Image(sources=["webcam"], type="numpy", label="Take a photo: it is added at once",
                                  elem_id="collect-webcam", height=260)
            with gr.Column(visible=False) as upload_box:
                files = gr.File(file_count="multiple", file_types=["image"], type="filepath",
                                label="Pictures for this class", elem_id="collect-files", height=140)
            source.change(lambda how: tuple(gr.update(visible=how == name) for name in SOURCES), source,
                          [draw_box, webcam_box, upload_box], queue=False, show_progress="hidden",
                          api_visibility="private")
        with gr.Column(scale=1, min_width=300):
            counts = gr.Markdown(counts_markdown(empty(), bounds), elem_id="collect-counts")
            gallery = gr.Gallery([], label="Your examples (newest first)", columns=5, height=240,
                                 allow_preview=False, object_fit="contain", elem_id="collect-gallery")
            with gr.Row():
                undo_btn = gr.Button("↶ Undo last example", size="sm", elem_id="collect-undo")
                clear = gr.Button("Start over", size="sm", elem_id="collect-clear")
            use = gr.Button("Use these classes", variant="primary", elem_id="collect-use")
    return CollectUI(state, name, add, target, sketch, add_sketch, webcam, files, counts, gallery, undo_btn, clear, use)


def wire(lab: Lab, c: CollectUI, data_zip: Any, after_data: Any) -> None:
    """Connect the collection.  ``data_zip``: the Train tab's zip input (Use puts the
    collection there); ``after_data(event)``: chains the Train tab's data check."""
    from .tab_try import blank_canvas, sketch_image

    bounds = Bounds.from_limits(lab.user_data.limits)
    cfg = dict(concurrency_id="collect", concurrency_limit=4, api_visibility="private", show_progress="hidden")

    def view(state):
        return counts_markdown(state, bounds), thumbnails(state)

    def on_add_class(state, name):
        state, problem = add_class(state or empty(), name, bounds)
        if problem:
            gr.Warning(problem[0].upper() + problem[1:])
            return state, gr.skip(), gr.skip(), *view(state)
        new = state["classes"][-1]
        return state, "", gr.update(choices=state["classes"], value=new), *view(state)

    outs = [c.state, c.name, c.target, c.counts, c.gallery]
    c.add_class.click(on_add_class, [c.state, c.name], outs, **cfg)
    c.name.submit(on_add_class, [c.state, c.name], outs, **cfg)

    def added(state, target, pictures):
        state, n, problems = add_examples(state or empty(), target, pictures, bounds)
        for problem in problems[:3]:
            gr.Warning(problem[0].upper() + problem[1:])
        return state, n

    def on_sketch(state, target, value):
        picture = sketch_image(value)
        if picture is None:
            gr.Warning("Draw something first.")
            return state, gr.skip(), *view(state)
        state, n = added(state, target, [("the drawing", picture)])
        return state, blank_canvas() if n else gr.skip(), *view(state)

    c.add_sketch.click(on_sketch, [c.state, c.target, c.sketch], [c.state, c.sketch, c.counts, c.gallery], **cfg)

    def on_webcam(state, target, picture):
        if picture is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        state, _ = added(state, target, [("the photo", picture)])
        return state, None, *view(state)

    c.webcam.change(on_webcam, [c.state, c.target, c.webcam], [c.state, c.webcam, c.counts, c.gallery], **cfg)

    def on_files(state, target, paths):
        if not paths:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        pictures = [(Path(file_path(p)).name, file_path(p)) for p in paths]
        state, _ = added(state, target, pictures)
        return state, None, *view(state)

    c.files.upload(on_files, [c.state, c.target, c.files], [c.state, c.files, c.counts, c.gallery], **cfg)

    def on_undo(state):
        state = undo(state or empty())
        return state, *view(state)

    c.undo.click(on_undo, c.state, [c.state, c.counts, c.gallery], **cfg)

    def on_clear():
        state = empty()
        return state, gr.update(choices=[], value=None), *view(state)

    c.clear.click(on_clear, None, [c.state, c.target, c.counts, c.gallery], **cfg)

    def on_use(state):
        state = state or empty()
        missing = problems_for_training(state)
        if missing:
            gr.Warning("Not yet: " + "; ".join(missing) + ".")
            return gr.skip()
        try:
            return str(write_zip(state))
        except OSError as err:
            gr.Warning(f"Could not store your classes: {err}")
            return gr.skip()

    after_data(c.use.click(on_use, c.state, data_zip, **cfg))
