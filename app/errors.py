"""Turning exceptions from the engine into sentences a student can act on."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import gradio as gr

log = logging.getLogger(__name__)

# Errors whose message the core writes for people (what went wrong and what to do).
_FRIENDLY = ("ValueError", "MissingDependencyError", "OfflineError", "FileNotFoundError", "OutOfMemoryError")


def readable(err: BaseException) -> str:
    """A one-paragraph message for the page; unexpected errors are also logged in full."""
    name = type(err).__name__
    text = str(err).strip() or name
    if name in _FRIENDLY:
        first = text.split(" ", 1)[0]
        if "." in first or "/" in first:  # starts with a file name: keep its case
            return text
        return text[0].upper() + text[1:] if text else name
    log.exception("unexpected error in the app", exc_info=err)
    return f"Something went wrong ({name}: {text}). Try Reset, or another preset."


def relay_to_page(job, what: str, skips: tuple) -> Iterator[tuple]:
    """Yield a :class:`~app.runner.Job`'s page updates: its warnings become toasts, and
    any failure becomes a status line ("The {what} could not go on: …") and a ``gr.Error``."""
    try:
        for update in job.relay():
            if update.warning:
                gr.Warning(update.warning)
            yield update.values
    except Exception as err:  # noqa: BLE001 — every failure becomes a readable message in the page
        message = err.message if isinstance(err, gr.Error) else readable(err)
        yield (f"⚠ **The {what} could not go on:** {message}",) + skips
        raise gr.Error(message) from err
