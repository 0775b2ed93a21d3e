"""A share link carrying markup, opened in a real browser (Debian's chromium via playwright).

``?model=[Click here](http://example.invalid)`` used to put a live link in the status box
and ``device=<img src=x …>`` an image.  Now the values are ignored with a note that shows
them as typed text.  Screenshot: ``test-artifacts/link-injection.png``.
"""

from __future__ import annotations

import urllib.parse

import pytest

from app_harness import chromium_context, open_page, require_chromium, shot

pytestmark = pytest.mark.browser

require_chromium()


def test_link_values_are_shown_as_text_not_markup(served):
    demo, url = served
    query = urllib.parse.urlencode({"model": "[Click here](http://example.invalid)",
                                    "device": "<img src=x onerror=alert(1)>", "r": "3.7"})
    with chromium_context() as browser:
        page = open_page(browser, f"{url}?{query}")
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.wait_for_selector("#status:has-text('ignored')", timeout=30_000)
        status = page.inner_text("#status")
        shot(page, "link-injection.png")
        assert "[Click here](http://example.invalid)" in status, status  # shown as typed
        assert "<img src=x onerror=alert(1)>" in status, status
        assert "r must be a whole number from 1 to 64" in status, status
        assert page.locator("a[href*='example.invalid']").count() == 0, "the link's markup became a live link"
        assert page.locator("#status img").count() == 0, "the link's markup became an image"
        assert not dialogs
        assert page.input_value("#rank input[type=number]") != "3"  # 3.7 was not truncated into the form


def test_a_second_run_in_the_same_tab_is_refused_with_a_toast(served):
    """Case 2 in the page: while a training runs, Compare's Start is refused with a sentence
    the user sees (a toast), not queued behind it.  Screenshot: ``second-run-refused.png``."""
    demo, url = served
    with chromium_context() as browser:
        page = open_page(browser, f"{url}?steps=1000&seed=7321")  # a seed no other test's run has
        page.click("#start")
        page.wait_for_selector("#status:has-text('Step')", timeout=90_000)
        try:
            page.click("#tab-compare-button")
            page.click("#compare-start")
            toast = page.locator("text=You already have a run queued or going in this tab")
            toast.first.wait_for(timeout=30_000)
            assert toast.first.is_visible()
            shot(page, "second-run-refused.png")
        finally:
            page.click("#tab-train-button")
            page.click("#stop")
