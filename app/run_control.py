"""A run's bookkeeping, shared by the Train and Compare tabs: start, stop, and what it leaves.

A run (one training on the Train tab, a comparison on the Compare tab) is registered under
its browser session when its handler starts; its updates are produced in a worker thread
(:class:`~app.runner.Job`) and relayed to the page.  When it ends it leaves its last page
update for a Stop handler that waits on it, its tuned model in the lab's cache and a
:class:`~app.sessions.SavedRun` in the session's runs (the Try tab's list).  The Stop
button asks the session's run to stop before its next step (and cancels one still waiting
in the queue).

This is also the one place the tabs turn the Train controls' values into a run
(:func:`read_settings`, through :func:`app.settings.run_config_from_ui`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr
from symlora.lab.runconfig import RunConfig

from .errors import page_error, relay_to_page
from .lab import Lab
from .runner import Job, Tracker, Update
from .sessions import TEST_SAMPLE, RunFlag, SavedRun, free_memory
from .settings import run_config_from_ui

MAX_RUNS_KEPT = 4  # per session, oldest dropped first
LATEST = "Latest run"  # the Try tab's choice that follows the newest run

Produce = Callable[[str, RunFlag], Iterator[Update]]  # (session, stop flag) → the run's page updates


def session_of(request: gr.Request | None) -> str:
    """The browser session (a ``gradio_client`` session) a request comes from."""
    return (request.session_hash if request is not None else None) or "anonymous"


def read_settings(values: Sequence[Any]) -> RunConfig:
    """The run the Train controls' values ask for (``TrainUI.controls`` order); a bad value
    becomes a one-line message in the page."""
    try:
        return run_config_from_ui(*values)
    except (TypeError, ValueError) as err:
        raise page_error(f"Invalid settings: {err}") from err


@dataclass(frozen=True)
class RunControl:
    """Start, stop and finish one kind of run of a session.

    ``kind`` keys the session's runs in :class:`~app.sessions.Runs` (``"train"``,
    ``"compare"``); ``what`` names the run in messages (``"run"``, ``"comparison"``);
    ``skips`` leave every output after the status as it is.
    """

    lab: Lab
    kind: str
    what: str
    skips: tuple

    def start(self, request: gr.Request | None, produce: Produce) -> Iterator[tuple]:
        """Register a run for the request's session and relay ``produce(session, flag)``'s
        updates to the page (the producer runs in a worker thread; the run is finished and
        memory freed however it ends)."""
        session = session_of(request)
        flag = self.lab.runs.begin(session, self.kind)
        job = Job(self._finishing(produce, session, flag), flag)
        yield from relay_to_page(job, self.what, self.skips)

    def _finishing(self, produce: Produce, session: str, flag: RunFlag) -> Iterator[Update]:
        try:
            yield from produce(session, flag)
        finally:
            self.lab.runs.finish(session, self.kind, flag)
            free_memory()

    def finished(self, session: str, flag: RunFlag, final: tuple) -> None:
        """The run is over: ``final``, its last page update, is what a Stop handler waiting
        for it shows.  Call it before yielding ``final`` (Stop may be waiting)."""
        self.lab.runs.finish(session, self.kind, flag, final)

    def keep(self, session: str, runs: dict[str, SavedRun], label: str, settings: RunConfig, result: Any,
             tracker: Tracker, user: Any = None) -> dict[str, SavedRun]:
        """What a finished run leaves behind: its tuned model in the lab's cache (freed with
        the session) and a :class:`SavedRun` in the session's ``runs`` (returned, updated).
        ``user``: the user's own data it trained on, if any."""
        saved = SavedRun.from_result(label, settings, result, tracker.curve, tracker.spectra,
                                     data_name=user.name if user else None,
                                     test_sample=user.test_sample(TEST_SAMPLE) if user else None)
        if tracker.bundle is not None:
            self.lab.tuned.put(saved.run_id, tracker.bundle)
            tracker.bundle = None  # the model only in the cache, freed with the session
        self.lab.runs.remember(session, saved.run_id)
        return add_run(runs, saved)

    def current(self, request: gr.Request | None) -> RunFlag | None:
        """The flag of the session's run going now (``None``: none is)."""
        flags = self.lab.runs.flags(session_of(request), self.kind)
        return flags[-1] if flags else None  # type: ignore[return-value]  # Runs keeps RunFlags

    def stop(self, request: gr.Request):
        """The Stop button: ask the session's run to stop and show its last update (it
        comes within a step; after 2 minutes, "Stopping…")."""
        session = session_of(request)
        if not self.lab.runs.stop(session, self.kind):
            return (f"Nothing is running (a {self.what} waiting in the queue was cancelled).",) + self.skips
        return self.lab.runs.wait_final(session, self.kind, timeout=120) or (("■ Stopping…",) + self.skips)

    def wire_stop(self, button: gr.Button, outputs: list[Any], run_event: Any) -> Any:
        """``button`` stops the run of ``run_event`` (cancelling it when it is still queued);
        returns the click event."""
        return button.click(self.stop, None, outputs, cancels=[run_event], concurrency_limit=None,
                            api_visibility="private", show_progress="hidden")


def add_run(runs: dict[str, SavedRun] | None, saved: SavedRun) -> dict[str, SavedRun]:
    """The session's runs with ``saved`` added under a unique label (newest last)."""
    runs = dict(runs or {})
    label, i = saved.label, 2
    while label in runs:
        label, i = f"{saved.label} #{i}", i + 1
    saved.label = label
    runs[label] = saved
    while len(runs) > MAX_RUNS_KEPT:
        runs.pop(next(iter(runs)))
    return runs


def run_choices(runs: dict[str, SavedRun] | None) -> Any:
    """The Try tab's run dropdown for the session's ``runs`` (newest first)."""
    labels = list(reversed(list(runs or {})))
    return gr.update(choices=[LATEST] + labels, value=LATEST)
