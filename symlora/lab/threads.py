"""CPU threads in a server: the training thread computes on several, every other on one.

PyTorch's CPU arithmetic runs on OpenMP (GNU libgomp in the Linux wheels).  Each thread
that runs a parallel region gets a team of workers of its own, kept until the thread ends,
and once the process holds more OpenMP threads than the machine has cores, libgomp stops
spinning between regions: after every region the workers go to sleep and must be woken
for the next.  A training step of a small model is a few thousand short regions, so it then
waits on wake-ups instead of computing.  Measured on a 2-core CPU, a 100-step digits run in
bf16 on two threads, the same CPU seconds (13–14 s) in every case
(``bench/cpu_threads.py``):

    everything in one thread                                   7.0 s
    model loaded in the main thread, trained in another one   11.2 s
    the same, the main thread on one thread from the start     6.7 s

A server trains in a thread of its own while other threads load models and answer pages.
So it sets one thread as the process's default before any arithmetic
(``torch.set_num_threads(1)``) and gives the cores to its training thread alone with
:func:`compute_on`.  ``torch.set_num_threads`` alone cannot do that: it sets the calling
thread's count *and* the default that threads take the first time they compute.
"""

from __future__ import annotations

import threading

import torch


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


__all__ = ["compute_on", "default_threads"]
