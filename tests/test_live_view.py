"""What a page shows of a run as it goes: crowded pages share points and figures.

Thirty pages on a teacher link follow one run: each building its own figures at its own
moments starved the run they watched (issue 12).  Pages must update at the same shared
points of the run, and a figure asked for by several pages at once is built once.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from app.live_view import SHARED_POINTS, LiveView, SharedFigures


def test_a_figure_asked_for_by_many_pages_at_once_is_built_once():
    figures, builds = SharedFigures(), []

    def build():
        builds.append(1)
        time.sleep(0.2)  # a plotly figure takes milliseconds; long enough for all to ask
        return object()

    got: list = []
    pages = [threading.Thread(target=lambda: got.append(figures.get(("curves", 1), build))) for _ in range(8)]
    for p in pages:
        p.start()
    for p in pages:
        p.join()
    assert len(builds) == 1
    assert len(got) == 8 and all(g is got[0] for g in got)


def test_a_failed_build_does_not_block_the_next_page():
    figures = SharedFigures()

    def broken():
        raise RuntimeError("plotly failed")

    try:
        figures.get("k", broken)
    except RuntimeError:
        pass
    assert figures.get("k", lambda: "built") == "built"


class FakeRuns:
    def __init__(self, active: int) -> None:
        self.n = active

    def active(self) -> int:
        return self.n


def step(n: int) -> SimpleNamespace:
    return SimpleNamespace(kind="step", step=n, is_final=False)


def shown_steps(active: int, phase: float, steps: int = 100) -> list[int]:
    """The step updates one page sends of a run whose events come every 0.15 s (of steps
    1…steps), the page opened ``phase`` seconds into the run (fake clock)."""
    clock = [0.0]
    view = LiveView(SimpleNamespace(runs=FakeRuns(active)), "run", "symlora", steps)
    import app.live_view as live_view

    real = live_view.time.monotonic
    live_view.time.monotonic = lambda: clock[0] + 100.0
    try:
        clock[0] = phase
        view.due(SimpleNamespace(kind="start", step=0, is_final=False), emit=True, paused=False)
        shown = []
        for s in range(1, steps + 1):
            clock[0] = phase + 0.15 * s
            if view.due(step(s), emit=True, paused=False):
                shown.append(s)
        return shown
    finally:
        live_view.time.monotonic = real


def test_crowded_pages_update_at_the_runs_shared_points():
    stride = 100 // SHARED_POINTS
    pages = [shown_steps(active=30, phase=p) for p in (0.0, 0.7, 1.9, 3.1)]
    points = set().union(*pages)
    assert all(s % stride == 0 for s in points), points  # the first event past each point: events come every step here
    assert len(points) <= SHARED_POINTS  # so the figures built for a whole class are a few dozen
    assert all(len(p) >= 2 for p in pages)  # and every page still sees the run move


def test_a_page_alone_is_not_held_to_the_shared_points():
    shown = shown_steps(active=1, phase=0.0)
    assert len(shown) >= 30  # every other or third event: ~every 0.3 s of a 15 s run
    assert any(s % (100 // SHARED_POINTS) for s in shown)


def test_live_curves_are_the_figure_plotly_builds_point_for_point():
    """The live curves fill a cached, checked figure with the run's points: the JSON a page
    gets must be what plotly builds from scratch, for one run and for a comparison."""
    import json

    from app import plots

    symlora = plots.Curve("SymLoRA r=8", "symlora", steps=[1, 2, 3], loss=[2.3, 2.1, 1.7], smoothed=[2.3, 2.2, 2.0],
                          eval_steps=[0, 3], metric=[0.1, 0.4])
    lora_start = plots.Curve("LoRA r=8", "lora", eval_steps=[0], metric=[0.12])
    second = plots.Curve("SymLoRA r=16", "symlora", steps=[1], loss=[2.2], smoothed=[2.2])
    for curves, metric in (([symlora], "accuracy"), ([symlora, lora_start, second], "perplexity")):
        built = plots._curves_built(curves, metric, "compare").to_plotly_json()
        live = plots.curves_figure(curves, metric, revision="compare").to_plotly_json()
        assert json.dumps(live, sort_keys=True) == json.dumps(built, sort_keys=True)
    symlora.steps.append(4), symlora.loss.append(1.5), symlora.smoothed.append(1.9)
    assert plots.curves_figure([symlora], "accuracy").to_plotly_json()["data"][0]["y"][-1] == 1.5  # not a stale copy
