"""The server's process ends cleanly while a page is still training.

A run in torch's arithmetic on a daemon thread when the interpreter shuts down aborts the
process ("terminate called without an active exception", exit status 134): seen at the end
of test sessions and of a server stopped with Ctrl+C mid-run.  Here a child process serves
the app, starts a long ``/train`` through ``gradio_client``, reads its first updates and
returns: it must exit with status 0 and no abort.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("gradio_client")

TESTS = Path(__file__).resolve().parent

CHILD = textwrap.dedent("""
    import gradio_client
    from app_harness import serve_app, train_args

    with serve_app() as (demo, url):
        client = gradio_client.Client(url, verbose=False)
        job = client.submit(*train_args(demo, steps=2000), api_name="/train")
        for i, _ in enumerate(job):
            if i >= 3:
                break
    print("left mid-run", flush=True)
""")


def test_the_process_exits_cleanly_with_a_run_still_training():
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)]),
                        "GRADIO_ANALYTICS_ENABLED": "False"}
    done = subprocess.run([sys.executable, "-c", CHILD], cwd=TESTS, env=env, capture_output=True, text=True,
                          timeout=300)
    assert "left mid-run" in done.stdout, done.stderr[-2000:]
    assert "terminate called" not in done.stderr, done.stderr[-2000:]
    assert done.returncode == 0, done.stderr[-2000:]


def test_stop_all_ends_every_worker_still_computing():
    """What the exit path relies on: ``Job.stop_all`` sets each live worker's stop flag and
    returns once their threads have ended (here workers busy in torch until stopped)."""
    import threading

    import torch

    from app.runner import Job

    def busy(stop: threading.Event):
        x = torch.randn(64, 64)
        while not stop.is_set():
            x = torch.tanh(x @ x.T / 64)
            yield float(x[0, 0])

    jobs = [Job(busy(flag), flag) for flag in (threading.Event(), threading.Event())]
    pages = [job.relay() for job in jobs]  # kept open: a closed relay would set the flag itself
    for page in pages:
        next(page)  # each worker is computing
    assert not any(job.stop.is_set() for job in jobs)
    Job.stop_all(timeout=30)
    assert all(job.stop.is_set() and not job.thread.is_alive() for job in jobs)
