"""Turning exceptions from the engine into sentences a student can act on."""

from __future__ import annotations

import logging

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
