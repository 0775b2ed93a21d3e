"""CPU threads in a server: the training thread computes on several, the rest on one.

``symlora.lab.threads.compute_on`` must change the calling thread's count only: threads
that compute later (a page's handler) keep the process's default, or their own OpenMP
workers would make the training thread's workers sleep between regions (see the module).
"""

from __future__ import annotations

import threading

import pytest
import torch

from symlora.lab.threads import compute_on, default_threads


def in_thread(fn):
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    return out[0]


@pytest.fixture
def default_one():
    """The process default set to one thread (as the app sets it), restored afterwards."""
    before = torch.get_num_threads()
    in_thread(lambda: torch.set_num_threads(1))
    yield
    torch.set_num_threads(before)


def test_compute_on_sets_the_calling_thread_only(default_one):
    def trainer():
        compute_on(2)
        x = torch.randn(256, 256)
        (x @ x).sum().item()  # the first arithmetic must not reset the thread's count
        return torch.get_num_threads(), default_threads()

    own, others = in_thread(trainer)
    assert own == 2
    assert others == 1
    assert in_thread(torch.get_num_threads) == 1  # a page thread started afterwards


def test_compute_on_refuses_zero_threads():
    with pytest.raises(ValueError, match="at least one"):
        compute_on(0)


def test_run_on_returns_the_work_computed_on_its_own_threads(default_one):
    from symlora.lab.threads import run_on

    def caller():
        seen = run_on(2, torch.get_num_threads)
        return seen, torch.get_num_threads()

    seen, callers_own = in_thread(caller)
    assert seen == 2 and callers_own == 1  # a page's thread stays on one
    with pytest.raises(ZeroDivisionError):
        run_on(2, lambda: 1 / 0)  # the work's error reaches the caller
