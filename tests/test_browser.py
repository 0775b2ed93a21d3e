"""The app in a real browser: Debian's chromium driven by playwright (never `playwright install`).

One app runs in this process for the module, so the tests can also look at its server-side
state (which runs are active).  Screenshots go to ``test-artifacts/``.  About a minute on
a 2-core CPU.
"""

from __future__ import annotations

import re
import threading
import time

import pytest

from app_harness import open_page, require_chromium, shot

pytestmark = pytest.mark.browser

STEPS = 20

require_chromium()


SERVE_HEARTBEAT = 1  # closed tabs are noticed within ~1 s


def plot_traces(page, elem_id: str) -> list[str]:
    """Types of the plotly traces that hold data in the plot ``#elem_id``."""
    return page.evaluate(
        """(id) => {
            const div = document.querySelector('#' + id + ' .js-plotly-plot');
            if (!div || !div.data) return [];
            return div.data.filter(t => (t.x && t.x.length) || (t.z && t.z.length)).map(t => t.type || 'scatter');
        }""", elem_id)


def controls(page) -> dict:
    """Every Train control's value as the page shows it (opens the advanced settings)."""
    if page.is_visible("#advanced") and not page.is_visible("#lr"):
        page.click("#advanced button.label-wrap")
        page.wait_for_selector("#lr", state="visible")
    return page.evaluate("""() => {
        const v = (s) => document.querySelector(s)?.value;
        return {
            preset: document.querySelector('#preset input:checked')?.value,
            model: v('#model input'), data: v('#data input'), device: v('#device input'),
            method: document.querySelector('#method input:checked')?.value,
            r: Number(v('#rank input[type=number]')), lora_alpha: Number(v('#alpha input')),
            targets: [...document.querySelectorAll('#targets input:checked')].map(i => i.name),
            lr: Number(v('#lr input')), steps: Number(v('#steps input[type=number]')),
            batch_size: Number(v('#batch input')), seed: Number(v('#seed input')),
        };
    }""")


def test_train_watch_and_try(served, browser):
    """Start a run, watch the loss and spectrum plots fill, then get a prediction in Try."""
    _, url = served
    page = open_page(browser, f"{url}?steps={STEPS}")
    assert "trains" in page.inner_text("#param-count")
    t0 = time.perf_counter()
    page.click("#start")
    page.wait_for_selector("#status:has-text('Step')", timeout=60_000)
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('Done')", timeout=180_000)
    wall = time.perf_counter() - t0
    page.wait_for_timeout(1500)  # let plotly draw the last update
    assert "scatter" in plot_traces(page, "curves"), "the loss plot holds no data"
    assert "heatmap" in plot_traces(page, "spectrum"), "the spectrum plot holds no data"
    assert "bar" in plot_traces(page, "memory")
    status = page.inner_text("#status")
    before, after = (float(x) for x in re.findall(r"([\d.]+)%", status)[:2])
    assert after > before, status
    shot(page, "train-done.png")
    print(f"\nbrowser run, {STEPS} steps: {wall:.1f} s from click to Done; {status.strip()}")

    page.click("#tab-try-button")
    page.click("#try-upload-tab-button")
    page.click("#try-sample")
    page.wait_for_function(
        "() => /^[0-9]$/.test((document.querySelector('#try-tuned h2, #try-tuned .output-class')?.innerText || '').trim())",
        timeout=60_000)
    truth = page.inner_text("#try-truth")
    assert "true answer" in truth
    assert page.inner_text("#try-base").strip(), "the base model shows no prediction"
    shot(page, "try-prediction.png")


def test_lesson_mode_hides_advanced_controls(served, browser):
    _, url = served
    page = open_page(browser, f"{url}?lesson=1&panels=train,try&presets=digits,fortunes&r=4&seed=7")
    assert page.is_visible("#lesson-banner")
    assert not page.is_visible("#advanced"), "advanced settings are visible in lesson mode"
    assert not page.is_visible("#model") and not page.is_visible("#lr")
    assert page.is_visible("#tab-train-button") and page.is_visible("#tab-try-button")
    assert not page.is_visible("#tab-compare-button") and not page.is_visible("#tab-learn-button")
    offered = page.eval_on_selector_all("#preset input", "els => els.map(e => e.value)")
    assert offered == ["digits", "fortunes"]
    assert page.input_value("#rank input[type=number]") == "4"
    assert page.input_value("#seed input") == "7"
    shot(page, "lesson-mode.png")


def test_share_link_restores_every_control(served, browser):
    """Open a setup, make its link in the UI, open the link in a fresh tab: same controls."""
    _, url = served
    query = "?method=lora&r=5&alpha=10&targets=attn.qkv&lr=0.002&steps=33&batch=32&seed=1234&device=cpu"
    page = open_page(browser, url + query)
    wanted = controls(page)
    assert wanted["method"] == "lora" and wanted["r"] == 5 and wanted["seed"] == 1234
    page.click("#share button.label-wrap")
    page.click("#make-link")
    page.wait_for_function("() => (document.querySelector('#share-link textarea, #share-link input')?.value || '').startsWith('http')")
    link = page.input_value("#share-link textarea, #share-link input")
    assert "seed=1234" in link and "targets=attn.qkv" in link
    page.close()
    fresh = open_page(browser, link)
    assert controls(fresh) == wanted
    fresh.close()


def test_closing_the_tab_stops_its_run(served, browser):
    demo, url = served
    before = demo.lab.runs.active()
    page = open_page(browser, f"{url}?steps=1000&seed={time.time_ns() % 2**31}")  # its own run, not a shared one
    page.click("#start")
    page.wait_for_selector("#status:has-text('Step')", timeout=60_000)
    assert demo.lab.runs.active() == before + 1
    page.close()
    deadline = time.time() + 30
    while demo.lab.runs.active() > before and time.time() < deadline:
        time.sleep(0.2)
    assert demo.lab.runs.active() == before, "the run kept going after its tab closed"
    running = [t for t in threading.enumerate() if t.name == "symlora-run"]
    deadline = time.time() + 10
    while running and time.time() < deadline:
        running = [t for t in running if t.is_alive()]
        time.sleep(0.2)
    assert not running, "the training thread is still alive"
