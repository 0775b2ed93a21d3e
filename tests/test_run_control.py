"""The run bookkeeping the Train and Compare tabs share (``app.run_control``), and the
Compare tab end to end through its ``/compare`` endpoint.

The first tests drive :class:`~app.run_control.RunControl` with a stand-in producer (no
model, no server: milliseconds); the last one launches the app in this process and runs a
two-step comparison (about 20–40 s on a 2-core CPU).
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from app_harness import train_args


def wait_until(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def control_for(kind: str = "train", what: str = "run"):
    import gradio as gr

    from app.lab import Lab
    from app.run_control import RunControl

    return RunControl(Lab(), kind, what, (gr.skip(),))


def run_in_thread(control, request, produce) -> tuple[threading.Thread, list, list]:
    """Relay a run as a Gradio handler would, in a thread: (thread, page updates, error)."""
    pages: list = []
    errors: list = []

    def handler():
        try:
            pages.extend(control.start(request, produce))
        except Exception as err:  # noqa: BLE001 — looked at by the test
            errors.append(err)

    thread = threading.Thread(target=handler, daemon=True)
    thread.start()
    return thread, pages, errors


def test_stop_shows_the_last_update_the_run_leaves_and_ends_it():
    from app.runner import Update

    control = control_for()
    request = SimpleNamespace(session_hash="tab-1")
    final = ("■ Stopped at step 3.", "curves")

    def produce(session, flag):
        yield Update(("Step 1", "curves"))
        assert wait_until(flag.is_set, 10), "Stop did not reach the run's flag"  # the engine checks it every step
        control.finished(session, flag, final)
        yield Update(final)

    thread, pages, errors = run_in_thread(control, request, produce)
    assert wait_until(lambda: control.lab.runs.active("tab-1") == 1)
    assert control.current(request) is not None
    assert control.stop(request) == final  # what the Stop button shows: the run's own last update
    thread.join(10)
    assert not errors and pages == [("Step 1", "curves"), final]
    assert control.lab.runs.active("tab-1") == 0 and control.current(request) is None


def test_stop_with_nothing_running_says_so_in_the_runs_own_words():
    train = control_for("train", "run")
    compare = control_for("compare", "comparison")
    request = SimpleNamespace(session_hash="tab-2")
    assert train.stop(request)[0] == "Nothing is running (a run waiting in the queue was cancelled)."
    assert compare.stop(request)[0] == "Nothing is running (a comparison waiting in the queue was cancelled)."


def test_a_failing_run_is_finished_and_its_message_reaches_the_page():
    import gradio as gr

    from app.runner import Update

    control = control_for("compare", "comparison")
    request = SimpleNamespace(session_hash="tab-3")

    def produce(session, flag):
        yield Update(("Preparing the comparison…", None))
        raise ValueError("no such dataset 'nope'")

    thread, pages, errors = run_in_thread(control, request, produce)
    thread.join(10)
    assert len(errors) == 1 and isinstance(errors[0], gr.Error)
    assert pages[-1][0].startswith("⚠ **The comparison could not go on:**") and "nope" in pages[-1][0]
    assert control.lab.runs.active("tab-3") == 0  # nothing left registered: Stop now says nothing runs


def test_bad_settings_are_refused_with_one_line():
    import gradio as gr

    from app.run_control import read_settings
    from app.settings import app_config, ui_values_from

    values = list(ui_values_from(app_config("digits")).values())
    assert read_settings(values) == app_config("digits")
    values[8] = 3.5  # steps
    with pytest.raises(gr.Error) as info:
        read_settings(values)
    assert "steps" in str(info.value.message) and "\n" not in str(info.value.message)


def test_compare_runs_lora_then_symlora_and_keeps_both_runs(served):
    """``/compare`` at equal rank, head-only left out: a table row per method, a
    conclusion, and both runs offered on the Try tab."""
    gradio_client = pytest.importorskip("gradio_client")
    demo, url = served
    client = gradio_client.Client(url, verbose=False)
    values = train_args(demo, steps=2)
    updates = list(client.submit(*values, "rank", False, None, "", api_name="/compare"))
    status, _, _, table, conclusion, try_run = updates[-1]
    assert status.startswith("✓ **Comparison finished.**"), status
    assert [row[0] for row in table["data"]] == ["LoRA", "SymLoRA"]
    assert conclusion.startswith("**SymLoRA "), conclusion
    labels = [c[0] if isinstance(c, (list, tuple)) else c for c in try_run["choices"]]
    assert sum(label.startswith("Compare: ") for label in labels) == 2, labels
    assert demo.lab.runs.active(client.session_hash) == 0
