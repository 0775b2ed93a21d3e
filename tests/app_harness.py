"""Scaffolding shared by the app tests: an app served in this process, and Debian's chromium.

Plain helpers and context managers; each test module wraps them in its own thin
module-scoped fixtures (``from app_harness import ...``: pytest puts ``tests/`` on sys.path).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-quic", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
VIEWPORT = {"width": 1400, "height": 1000}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_app(heartbeat: float | None = None):
    """(demo, url) of the app running in this process, closed on exit.

    ``heartbeat``: seconds between Gradio heartbeats (GRADIO_HEARTBEAT_INTERVAL) while it
    runs, so closed tabs are noticed fast; the old value is restored afterwards.
    """
    old = os.environ.get("GRADIO_HEARTBEAT_INTERVAL")
    if heartbeat is not None:
        os.environ["GRADIO_HEARTBEAT_INTERVAL"] = str(heartbeat)
    try:
        from app.ui import build_demo, launch

        demo = build_demo()
        _, url, _ = launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                           quiet=True)
        try:
            yield demo, url
        finally:
            demo.close()
    finally:
        if heartbeat is not None:
            if old is None:
                os.environ.pop("GRADIO_HEARTBEAT_INTERVAL", None)
            else:
                os.environ["GRADIO_HEARTBEAT_INTERVAL"] = old


def require_chromium():
    """playwright.sync_api; call at module level: skips the module without chromium or playwright."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)
    return pytest.importorskip("playwright.sync_api")


@contextmanager
def chromium_context():
    """A playwright persistent chromium context on a temporary profile (removed afterwards)."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="symlora-chromium-")
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=ARGS,
                                                           headless=True, viewport=VIEWPORT)
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def open_page(context, url: str):
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("#param-count:has-text('parameters')", timeout=90_000)  # the page load has run
    return page


def fill_kept(page, selector: str, text: str, timeout: float = 30.0) -> None:
    """Fill a Gradio text box and make sure the page keeps the text.

    A box that has just appeared (an accordion opened, a group shown) can be reset to its
    stored value by Gradio's frontend as it mounts, taking text typed in that first moment
    with it; a person would see it vanish and type again, and so does this (checked after
    a second, until ``timeout`` seconds)."""
    box = page.locator(selector).first
    deadline = time.monotonic() + timeout
    while True:
        box.fill(text)
        page.wait_for_timeout(1_000)
        if box.input_value() == text:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{selector} does not keep the text typed into it")


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def train_args(demo, preset: str | None = None, **changes) -> list:
    """The positional ``/train`` (and ``/compare``) settings for ``preset`` (default: the
    app's) with ``changes``, in the controls' order; targets travel as comma-separated text."""
    from app.settings import ui_values_from

    values = ui_values_from(demo.lab.default_config(preset)) | changes
    if not isinstance(values["targets"], str):
        values["targets"] = ",".join(values["targets"])
    return list(values.values())
