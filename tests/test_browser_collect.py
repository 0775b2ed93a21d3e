"""Collecting classes in a real browser, and the views new users tripped over (issue 16).

* Name two classes, draw examples of one on the sketchpad and upload pictures of the
  other, see the counts and thumbnails, use them, train a few steps; the Try tab then
  offers those classes and shows the user's own test pictures as examples.
* Own dark-on-light pictures: the Try sketchpad turns black-on-white, downloads are named
  after the data, and each download carries a model card.
* Parameter counts say adapter vs head; the spectrum says its order; the memory bar
  names the process overhead.  The text preset says it is preparing at once, and
  one-quote-per-line text is accepted with the splitting named.

Screenshots go to ``test-artifacts/``.  A minute or two on a 2-core CPU.
"""

from __future__ import annotations

import io
import re
import time
import zipfile

import numpy as np
import pytest

from app_harness import fill_kept, open_page, require_chromium, shot
from test_app_upload import make_zip, shape_png

pytestmark = pytest.mark.browser

require_chromium()


SERVE_HEARTBEAT = 1  # closed tabs are noticed within ~1 s


def draw_bar(page, offset: int) -> None:
    """Draw a vertical stroke on the collection's sketchpad with the mouse."""
    canvas = page.locator("#collect-sketch canvas").first
    box = canvas.bounding_box()
    x = box["x"] + box["width"] * (0.35 + 0.1 * offset)
    page.mouse.move(x, box["y"] + box["height"] * 0.15)
    page.mouse.down()
    for i in range(1, 11):
        page.mouse.move(x, box["y"] + box["height"] * (0.15 + 0.07 * i))
    page.mouse.up()


def counts(page) -> str:
    return page.inner_text("#collect-counts")


def test_collect_two_classes_train_and_try(served, browser, tmp_path):
    page = open_page(browser, served[1] + "?steps=8&batch=16")
    page.click("#own-data button.label-wrap")
    page.click("#own-how label:has-text('Collect')")
    page.wait_for_selector("#collect-name", state="visible")
    for name in ("bar", "square"):
        fill_kept(page, "#collect-name textarea, #collect-name input", name)
        page.click("#collect-add-class")
        page.wait_for_function(f"() => document.querySelector('#collect-counts').innerText.includes('{name} 0')")
    page.click("#collect-target label:has-text('bar')")
    for i in range(3):
        draw_bar(page, i)
        page.click("#collect-add-sketch")
        page.wait_for_function(f"() => document.querySelector('#collect-counts').innerText.includes('bar {i + 1}')",
                               timeout=30_000)
    page.click("#collect-target label:has-text('square')")
    shot(page, "collect-drawn.png")
    page.click("#collect-source label:has-text('Upload')")
    rng = np.random.default_rng(0)
    files = []
    for i in range(4):
        path = tmp_path / f"square-{i}.png"
        path.write_bytes(shape_png("square", rng))
        files.append(str(path))
    page.set_input_files("#collect-files input[type=file]", files)
    page.wait_for_function("() => document.querySelector('#collect-counts').innerText.includes('square 4')",
                           timeout=30_000)
    assert "Ready" in counts(page)
    assert page.locator("#collect-gallery img").count() == 7  # a thumbnail per example
    shot(page, "collect-classes.png")

    page.click("#collect-use")
    page.wait_for_selector("#data-note:has-text('Training on your images')", timeout=60_000)
    note = page.inner_text("#data-note")
    assert "my-classes.zip" in note and "2 classes (bar, square)" in note, note

    page.click("#start")
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('Done')", timeout=180_000)
    assert "my-classes.zip" in page.inner_text("#status")
    shot(page, "collect-trained.png")

    page.click("#tab-try-button")
    page.wait_for_selector("#try-sketch:has-text('white on black')")  # drawings and shapes are light on dark
    page.click("#try-upload-tab-button")
    page.wait_for_selector("#try-examples:has-text('Your test images')", timeout=30_000)
    page.locator("#try-examples img").first.click()
    page.wait_for_function(
        "() => /^(bar|square)$/.test((document.querySelector('#try-tuned h2, #try-tuned .output-class')"
        "?.innerText || '').trim())", timeout=60_000)
    assert "your test images" in page.inner_text("#try-truth")
    shot(page, "collect-try.png")
    page.close()


def test_own_dark_on_light_pictures_set_the_try_style_and_download_names(served, browser, tmp_path):
    rng = np.random.default_rng(1)
    members = {}
    for kind in ("circle", "square"):
        for i in range(10):
            from PIL import Image, ImageOps

            light = ImageOps.invert(Image.open(io.BytesIO(shape_png(kind, rng))))  # black ink on white
            buf = io.BytesIO()
            light.save(buf, "PNG")
            members[f"{kind}/{i}.png"] = buf.getvalue()
    letters = make_zip(tmp_path / "ink-shapes.zip", members)
    page = open_page(browser, served[1] + "?steps=6&batch=16")
    page.click("#own-data button.label-wrap")
    page.set_input_files("#data-zip input[type=file]", letters)
    page.wait_for_selector("#data-note:has-text('Training on your images')", timeout=60_000)

    # The counter follows the upload: a 2-class head on the ViT's 192 features has 2·192 + 2 = 386 weights;
    # the bar then shows the same two parts as the text.
    page.wait_for_function("() => document.querySelector('#param-count').innerText.includes('+ 386 in the new')",
                           timeout=30_000)
    deadline = time.monotonic() + 30
    while True:
        params, bar = page.inner_text("#param-count"), page.inner_text("#param-plot")
        found = re.search(r"([\d,]+) adapter weights on \d+ layers \+ ([\d,]+) in the new classifier head", params)
        assert found, params
        if f"{found.group(1)} + {found.group(2)}" in bar or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert f"{found.group(1)} + {found.group(2)}" in bar, (params, bar)

    page.click("#start")
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('Done')", timeout=180_000)
    assert "same order as the bars" in page.inner_text("#spectrum")
    assert "largest |value| first" in page.inner_text("#spectrum")
    assert "not the adapter" in page.inner_text("#memory")
    shot(page, "train-fixed-views.png")

    page.click("#tab-try-button")
    page.wait_for_selector("#try-sketch:has-text('black on white')", timeout=30_000)
    page.click("#try-upload-tab-button")
    page.wait_for_selector("#try-examples:has-text('Your test images')")
    page.locator("#try-examples img").first.click()
    page.wait_for_function("() => document.querySelector('#try-truth').innerText.includes('true answer')")
    page.click("#tab-try button:has-text('Take it home')")
    page.click("#try-prepare")
    page.wait_for_selector("#try-peft-file a", timeout=60_000)
    names = page.inner_text("#try-adapter-file") + page.inner_text("#try-peft-file")
    assert "ink-shapes-symlora-r" in names and "digits" not in names, names
    href = page.get_attribute("#try-peft-file a", "href")
    with zipfile.ZipFile(io.BytesIO(page.request.get(href).body())) as zf:
        card = zf.read("README.md").decode()
    assert "| 1 | square |" in card and 'load_model("fmnist-vit")' in card and "ink-shapes.zip" in card
    shot(page, "try-own-dark-on-light.png")
    page.close()


def test_text_preset_says_it_is_preparing_and_takes_one_quote_per_line(served, browser):
    demo = served[0]
    first_load = "smollm2-135m" not in demo.lab.bases.loaded_models()  # an earlier module may have loaded it
    page = open_page(browser, served[1])
    t0 = time.perf_counter()
    page.click("#preset label:has-text('fortunes')")
    if first_load:  # "Preparing" is shown only while the model loads
        page.wait_for_selector("#status:has-text('Preparing')", timeout=5_000)
        shown = time.perf_counter() - t0
        assert "smollm2-135m" in page.inner_text("#status")
        page.wait_for_selector("#status:has-text('is ready')", timeout=180_000)
        print(f"\n'Preparing' shown after {shown:.1f} s; the model was ready after {time.perf_counter() - t0:.1f} s")
    page.click("#own-data button.label-wrap")  # the text box shows once the page has switched to the language model
    fill_kept(page, "#data-text textarea", "\n".join(f"Quote number {i}: make it so." for i in range(12)))
    page.wait_for_selector("#data-note:has-text('one piece per line')", timeout=30_000)
    note = page.inner_text("#data-note")
    assert "Training on your text" in note, note
    shot(page, "text-one-per-line.png")
    page.close()


def test_learn_tab_is_short_with_units_and_numbers_that_do_not_wrap(served, browser):
    page = open_page(browser, served[1])
    page.click("#tab-learn-button")
    page.wait_for_selector("#learn-results", state="visible")
    results = page.inner_text("#learn-results")
    assert " pt" in results and "percentage points" in results  # accuracy differences carry their unit
    assert not page.is_visible("#learn-every-table"), "the every-configuration table starts collapsed"
    white_space = page.eval_on_selector("#calc-table td:nth-child(2)", "td => getComputedStyle(td).whiteSpace")
    overflow = page.eval_on_selector("#calc-table", "b => b.querySelector('table').getBoundingClientRect().right - b.getBoundingClientRect().right")
    assert overflow <= 1, f"the calculator table is {overflow} px too wide"
    assert white_space == "nowrap"
    height = page.evaluate("() => document.body.scrollHeight")
    shot(page, "learn.png")
    assert height < 6000, height
    page.click("#learn-every button.label-wrap")
    page.wait_for_selector("#learn-every-table", state="visible")
    page.close()
