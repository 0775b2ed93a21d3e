"""Turning exceptions from the engine into sentences a student can act on."""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Iterator

import gradio as gr

log = logging.getLogger(__name__)

# Errors whose message the core writes for people (what went wrong and what to do).
_FRIENDLY = ("ValueError", "MissingDependencyError", "OfflineError", "FileNotFoundError", "OutOfMemoryError")


_MARKDOWN = re.compile(r"([\\`*_\[\]()!<>|~])")


def as_text(text: str) -> str:
    """``text`` with HTML's special characters escaped: Gradio renders the message of a
    ``gr.Error`` / ``gr.Warning`` as HTML, and messages may quote what a user typed."""
    return html.escape(text, quote=False)


def as_markdown_text(text: str) -> str:
    """``text`` escaped for a ``gr.Markdown``: shown as typed, never a link, image or tag."""
    return _MARKDOWN.sub(r"\\\1", text)


def readable(err: BaseException) -> str:
    """A one-paragraph message for the page (HTML-escaped: it may quote user input);
    unexpected errors are also logged in full."""
    return as_text(_readable(err))


def _readable(err: BaseException) -> str:
    name = type(err).__name__
    text = str(err).strip() or name
    if name in _FRIENDLY:
        first = text.split(" ", 1)[0]
        if "." in first or "/" in first:  # starts with a file name: keep its case
            return text
        return text[0].upper() + text[1:] if text else name
    log.exception("unexpected error in the app", exc_info=err)
    return f"Something went wrong ({name}: {text}). Try Reset, or another preset."


def page_error(problem: BaseException | str) -> gr.Error:
    """A ``gr.Error`` for the page (raise it).  A user's mistake (a message, or an error the
    core words for people) is logged as one WARNING line, not a traceback; an unexpected
    error was already logged in full by :func:`readable`, so Gradio prints nothing more."""
    if isinstance(problem, BaseException):
        message = problem.message if isinstance(problem, gr.Error) else readable(problem)
        mistake = isinstance(problem, gr.Error) or type(problem).__name__ in _FRIENDLY
    else:
        message, mistake = problem, True
    if mistake:
        log.warning("not done for a user: %s", message.splitlines()[0] if message else "")
    return gr.Error(message, print_exception=False)


def relay_to_page(job, what: str, skips: tuple) -> Iterator[tuple]:
    """Yield a :class:`~app.runner.Job`'s page updates: its warnings become toasts, and
    any failure becomes a status line ("The {what} could not go on: …") and a ``gr.Error``."""
    try:
        for update in job.relay():
            if update.warning:
                gr.Warning(update.warning)
            yield update.values
    except Exception as err:  # noqa: BLE001 — every failure becomes a readable message in the page
        error = page_error(err)
        yield (f"⚠ **The {what} could not go on:** {as_markdown_text(html.unescape(error.message))}",) + skips
        raise error from err
