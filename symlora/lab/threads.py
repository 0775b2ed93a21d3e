"""CPU threads in a server: the training thread computes on several, every other on one.

PyTorch's CPU arithmetic runs on OpenMP (GNU libgomp in the Linux wheels).  Each thread
that runs a parallel region gets a team of workers of its own, kept until the thread ends,
and once the process holds more OpenMP threads than the machine has cores, libgomp stops
spinning between regions: after every region the workers go to sleep and must be woken
for the next.  A training step of a small model is a few thousand short regions, so it then
waits on wake-ups instead of computing.  Measured on a 2-core CPU, a 100-step digits run in
bf16 on two threads, 16–17 CPU seconds in every case (``bench/cpu_threads.py``, median of 3):

    everything in one thread                                   8.6 s
    model loaded in the main thread, trained in another one   13.0 s
    the same, the main thread on one thread from the start     8.0 s

A server trains in a thread of its own while other threads load models and answer pages.
So it sets one thread as the process's default before any arithmetic
(``torch.set_num_threads(1)``) and gives the cores to its training thread alone with
:func:`compute_on`.  ``torch.set_num_threads`` alone cannot do that: it sets the calling
thread's count *and* the default that threads take the first time they compute.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def default_threads() -> int:
    """The number of threads a thread that has not computed yet will compute on."""
    seen: list[int] = []
    probe = threading.Thread(target=lambda: seen.append(torch.get_num_threads()), name="threads-probe")
    probe.start()
    probe.join()
    return seen[0]


def compute_on(n: int) -> None:
    """Compute on ``n`` threads in the calling thread only; the process's default (what
    threads that have not computed yet take) stays as it was."""
    if n < 1:
        raise ValueError(f"a thread computes on at least one thread, not {n}")
    # Reading the count first also settles this thread's own setting: PyTorch sets a
    # thread's count from the default the first time it computes, which would undo ours.
    if torch.get_num_threads() == n:
        return
    default = default_threads()
    torch.set_num_threads(n)
    if default != n:
        restore = threading.Thread(target=torch.set_num_threads, args=(default,), name="threads-restore")
        restore.start()
        restore.join()


def run_on(n: int, work: Callable[[], T]) -> T:
    """``work()`` in a short-lived thread that computes on ``n`` threads, for a server's
    occasional heavy work outside training (a language model's generation).  Its OpenMP
    workers end with the thread: measured on 2 cores, a training run afterwards took
    8.8 s (7.9 s with no such work before it), against 13.2 s while a thread that had
    computed on two threads lived on."""
    result: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            compute_on(n)
            result.append(work())
        except BaseException as err:  # noqa: BLE001 — raised again in the caller
            errors.append(err)

    worker = threading.Thread(target=target, name="compute-on")
    worker.start()
    worker.join()
    if errors:
        raise errors[0]
    return result[0]


__all__ = ["compute_on", "default_threads", "run_on"]
