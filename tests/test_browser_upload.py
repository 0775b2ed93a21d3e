"""Your own data in a real browser (Debian's chromium driven by playwright).

Upload a zip of circles and squares on the Train tab, see what the page says about it
(and that share links cannot carry it), train, try the tuned model on one of its test
images, then clear the upload.  A one-class zip shows a warning and is cleared.
Screenshots go to ``test-artifacts/``.  About a minute on a 2-core CPU.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from app_harness import open_page, require_chromium, shot
from test_app_upload import make_zip, shape_png, shapes_members

pytestmark = pytest.mark.browser

require_chromium()


SERVE_HEARTBEAT = 1  # closed tabs are noticed within ~1 s


@pytest.fixture(scope="module")
def page(served, browser):
    page = open_page(browser, served[1] + "?steps=6&batch=16")
    yield page
    page.close()


def test_upload_train_try_and_clear(page, tmp_path):
    shapes = make_zip(tmp_path / "shapes.zip", shapes_members())
    page.click("#own-data button.label-wrap")
    page.wait_for_selector("#data-zip", state="visible")
    assert "one folder per class" in page.inner_text("#own-images-help")
    page.set_input_files("#data-zip input[type=file]", shapes)
    page.wait_for_selector("#data-note:has-text('Training on your images')", timeout=60_000)
    note = page.inner_text("#data-note")
    assert "shapes.zip" in note and "2 classes (circle, square)" in note
    page.wait_for_function("() => document.querySelector('#param-count').innerText.includes('trains')")
    page.click("#share button.label-wrap")
    page.wait_for_selector("#share-note", state="visible")
    assert "cannot carry" in page.inner_text("#share-note")
    shot(page, "train-own-data.png")

    t0 = time.perf_counter()
    page.click("#start")
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('Done')", timeout=180_000)
    status = page.inner_text("#status")
    assert "shapes.zip" in status, status
    print(f"\nbrowser run on an upload: {time.perf_counter() - t0:.1f} s; {status.strip()}")

    page.click("#tab-try-button")
    page.click("#try-upload-tab-button")
    page.click("#try-sample")
    page.wait_for_function(
        "() => /^(circle|square)$/.test((document.querySelector('#try-tuned h2, #try-tuned .output-class')"
        "?.innerText || '').trim())", timeout=60_000)
    assert "shapes.zip" in page.inner_text("#try-truth")
    shot(page, "try-own-data.png")

    page.click("#tab-train-button")
    page.click("#data-zip button[aria-label='Clear']")
    page.wait_for_selector("#data-note", state="hidden", timeout=30_000)
    assert not page.is_visible("#share-note")


def test_a_one_class_zip_is_refused_with_a_warning(page, tmp_path):
    rng = np.random.default_rng(0)
    cats = make_zip(tmp_path / "cats.zip", {f"cat/{i}.png": shape_png("circle", rng) for i in range(4)})
    if not page.is_visible("#data-zip"):
        page.click("#own-data button.label-wrap")
    page.set_input_files("#data-zip input[type=file]", cats)
    page.wait_for_selector("text=only one class", timeout=60_000)
    page.wait_for_selector("#data-note:has-text('could not be used')")
    shot(page, "train-own-data-refused.png")
    assert page.locator("#data-zip input[type=file]").count() == 1, "the refused zip was not cleared"


def shown_step(page) -> int:
    found = re.search(r"Step (\d+)/", page.inner_text("#status"))
    return int(found.group(1)) if found else -1


def test_pause_step_resume_and_stop(served, browser):
    """The run waits while paused, Step trains one more step, Resume goes on, Stop ends it."""
    page = open_page(browser, served[1] + "?steps=1000&batch=16")
    page.click("#start")
    page.wait_for_function("() => /Step \\d+\\/1000/.test(document.querySelector('#status').innerText)",
                           timeout=60_000)
    page.click("#pause")
    # The button is the pause's own answer; the status may first get a step update that was
    # already on its way (a known race: the next update after a Step says "Paused" again).
    page.wait_for_selector("#pause:has-text('Resume')")
    page.wait_for_timeout(1000)  # an update already under way may still arrive
    paused_at = shown_step(page)
    page.wait_for_timeout(1500)
    assert shown_step(page) == paused_at > 0, "the run went on while paused"
    page.click("#step")
    page.wait_for_function(f"() => (/Step (\\d+)\\//.exec(document.querySelector('#status').innerText) || [0, 0])[1] > {paused_at}",
                           timeout=30_000)
    stepped = shown_step(page)
    page.wait_for_timeout(1000)
    assert shown_step(page) == stepped, "Step let the run go on"
    assert "Paused" in page.inner_text("#status")
    page.click("#pause")  # Resume
    page.wait_for_function(f"() => (/Step (\\d+)\\//.exec(document.querySelector('#status').innerText) || [0, 0])[1] > {stepped}",
                           timeout=30_000)
    assert "Paused" not in page.inner_text("#status")
    page.click("#pause")  # pause again: Stop must still work at once
    page.wait_for_selector("#pause:has-text('Resume')")
    t0 = time.perf_counter()
    page.click("#stop")
    page.wait_for_selector("#status:has-text('Stopped')", timeout=30_000)
    assert time.perf_counter() - t0 < 10
    page.wait_for_selector("#pause:has-text('Pause')", timeout=10_000)
    shot(page, "train-paused-then-stopped.png")
    print(f"\npaused at step {paused_at}, stepped to {stepped}; {page.inner_text('#status').strip()}")
    deadline = time.time() + 10
    while served[0].lab.runs.active() and time.time() < deadline:
        time.sleep(0.2)
    assert served[0].lab.runs.active() == 0
    page.close()
