"""Checking what a request sends before any work is done on it.

Every number a page (or a script through the API) sends is checked against its range by
the core's own validation (:func:`symlora.config.check_int` / ``check_number``, what the
CLI uses) in the input component's preprocessing, so a bad value is refused with a
one-line message naming the setting and its range, before any handler runs: ``r = 3.7``
is refused (not truncated to 3), NaN or inf never reach the engine, a seed of 2⁷⁰ is not
an "Overflow" error.  A file that is not an image gets a sentence, not Gradio's generic
error.  The limits of the Try tab's text generation live here too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from .errors import as_text
from .settings import LIMITS, check_value

# Text generation on a public server: the prompt is cut to its end (what the continuation
# follows), so one request's work does not grow with what is pasted.
MAX_PROMPT_CHARS = 2_000  # the prompt box's limit in the page; longer API prompts are cut too
MAX_PROMPT_TOKENS = 256  # what the models read of a prompt here (their context is far longer)
TRY_LIMITS: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 1.5),
    "max_tokens": (5, 120),
    "gen_seed": (0, 2**32 - 1),
}


def guard(component: Any, check: Callable[[Any], Any]) -> Any:
    """Run ``check(payload)`` before ``component``'s own preprocessing (a ``ValueError``
    becomes a one-line ``gr.Error``, which Gradio shows as it is).  Returns ``component``."""
    original = component.preprocess

    def preprocess(payload: Any) -> Any:
        try:
            check(payload)
        except ValueError as err:  # the setting's own name starts the sentence (r, lora_alpha, …)
            raise gr.Error(as_text(str(err)), print_exception=False) from None
        return original(payload)

    component.preprocess = preprocess
    return component


def guard_number(component: Any, name: str, limits: dict[str, tuple[float, float]] = LIMITS) -> Any:
    """Refuse a value of ``component`` (a Number or Slider for setting ``name``) outside
    its range; an empty value is left to the handler."""
    return guard(component, lambda payload: None if payload is None else check_value(name, payload, limits))


def guard_image(component: Any) -> Any:
    """A file that is not a readable image gets a sentence saying so (the component's own
    decoding error would reach the client as a generic "error")."""
    original = component.preprocess

    def preprocess(payload: Any) -> Any:
        try:
            return original(payload)
        except gr.Error:
            raise
        except Exception as err:  # noqa: BLE001 — whatever PIL or Gradio's model says, the answer is the same
            name = getattr(payload, "orig_name", None) or (payload.get("orig_name") if isinstance(payload, dict) else None)
            what = f"“{as_text(str(name))}”" if name else "The file you sent"
            raise gr.Error(f"{what} is not an image this app can read (send a PNG, JPEG, GIF, BMP or WebP "
                           f"picture).", print_exception=False) from err

    component.preprocess = preprocess
    return component


def install(train_ui: Any, try_ui: Any) -> None:
    """Put the checks on the Train and Try tabs' inputs (every event that reads them, the
    Compare tab's included, gets the same checks)."""
    for name in ("r", "lora_alpha", "lr", "steps", "batch_size", "seed"):
        guard_number(getattr(train_ui, name), name)
    guard_number(try_ui.temperature, "temperature", TRY_LIMITS)
    guard_number(try_ui.max_tokens, "max_tokens", TRY_LIMITS)
    guard_number(try_ui.gen_seed, "gen_seed", TRY_LIMITS)
    guard_image(try_ui.image)


def prompt_note(kept_tokens: int) -> str:
    """The sentence shown when a prompt was cut."""
    return (f"✂ **Your prompt was cut** to its last {kept_tokens} tokens: the models here read at most "
            f"{MAX_PROMPT_TOKENS} tokens ({MAX_PROMPT_CHARS:,} characters) of a prompt.")
