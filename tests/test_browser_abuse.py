"""A share link carrying markup, opened in a real browser (Debian's chromium via playwright).

``?model=[Click here](http://example.invalid)`` used to put a live link in the status box
and ``device=<img src=x …>`` an image.  Now the values are ignored with a note that shows
them as typed text.  Screenshot: ``test-artifacts/link-injection.png``.
"""

from __future__ import annotations

import urllib.parse

import pytest

from app_harness import chromium_context, open_page, require_chromium, serve_app, shot

pytestmark = pytest.mark.browser

require_chromium()


@pytest.fixture(scope="module")
def served():
    with serve_app() as (demo, url):
        yield demo, url.rstrip("/") + "/"


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
