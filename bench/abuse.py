"""Two abuse cases against a real app server, measured through its public API.

1. ``/generate`` with a 40,000-character prompt: wall time, and the growth of the
   server process's peak and current RSS (the model is loaded by a short call first).
2. 70 queue joins with fresh session ids from one address while the only training slot
   is busy: how many are accepted, how long the joins take, and whether a request from
   another address (127.0.0.2) still gets in.  Everything queued is cancelled afterwards.

Run it once with the code before a change and once after, e.g.::

    PYTHONPATH=/path/to/old/checkout python bench/abuse.py
    PYTHONPATH=$PWD python bench/abuse.py

CPU timings vary with what else the machine runs.
"""

from __future__ import annotations

import argparse
import os
import socket
import time
import uuid

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def long_prompt(client, chars: int) -> None:
    prompt = ("Captain's log, stardate 41153.7. Our destination is planet Deneb IV. " * (chars // 68 + 1))[:chars]
    client.predict("Hello", 0.0, 5, 0, "Latest run", "smollm2-135m", api_name="/generate")  # load the model
    peak0, rss0 = peak_rss_mb(), rss_mb()
    t0 = time.perf_counter()
    base, _, note = client.predict(prompt, 0.0, 5, 0, "Latest run", "smollm2-135m", api_name="/generate")
    wall = time.perf_counter() - t0
    print(f"/generate, {len(prompt):,}-character prompt: {wall:.1f} s; peak RSS +{peak_rss_mb() - peak0:,.0f} MB, "
          f"RSS +{rss_mb() - rss0:,.0f} MB; answer {len(base):,} characters; note: {note[:90]!r}")


def queue_joins(demo, url: str, joins: int) -> None:
    import httpx

    from app.settings import FIELDS  # noqa: F401 — the same /train arguments as the page

    fn_index = next(i for i, fn in demo.fns.items() if fn.api_name == "train")
    from app.settings import ui_values_from

    s = ui_values_from(demo.lab.default_config())
    values = list((s | {"targets": ",".join(s["targets"]), "steps": 1000}).values())

    def join(session: str, local_address: str | None = None) -> httpx.Response:
        transport = httpx.HTTPTransport(local_address=local_address) if local_address else None
        with httpx.Client(transport=transport, timeout=30) as http:
            return http.post(f"{url}gradio_api/queue/join", json={
                "data": values + [None, "", None], "fn_index": fn_index, "session_hash": session,
                "event_data": None, "trigger_id": None})

    holder = uuid.uuid4().hex[:10]
    accepted = [(holder, join(holder).json()["event_id"])]
    deadline = time.time() + 120
    while demo.lab.runs.active(holder) == 0 and time.time() < deadline:
        time.sleep(0.2)
    t0 = time.perf_counter()
    refused: list[str] = []
    for _ in range(joins):
        session = uuid.uuid4().hex[:10]
        answer = join(session)
        if answer.status_code == 200:
            accepted.append((session, answer.json()["event_id"]))
        else:
            refused.append(answer.text)
    wall = time.perf_counter() - t0
    other = join(uuid.uuid4().hex[:10], local_address="127.0.0.2")
    print(f"{joins} joins with fresh session ids from one address (1 training already running): "
          f"{len(accepted) - 1} accepted, {len(refused)} refused in {wall:.1f} s; "
          f"another address: {'accepted' if other.status_code == 200 else 'refused: ' + other.text[:80]}"
          + (f"; refusal: {refused[0][:160]}" if refused else ""))
    if other.status_code == 200:
        accepted.append(("other", other.json()["event_id"]))
    for session, event_id in accepted[1:]:
        httpx.post(f"{url}gradio_api/cancel", json={"session_hash": session, "fn_index": fn_index,
                                                     "event_id": event_id}, timeout=30)
    demo.lab.runs.stop(holder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chars", type=int, default=40_000)
    parser.add_argument("--joins", type=int, default=70)
    parser.add_argument("--skip-prompt", action="store_true")
    args = parser.parse_args()

    import gradio_client

    from app.ui import build_demo, launch

    demo = build_demo()
    _, url, _ = launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        client = gradio_client.Client(url, verbose=False)
        if not args.skip_prompt:
            long_prompt(client, args.chars)
        queue_joins(demo, url, args.joins)
    finally:
        demo.close()


if __name__ == "__main__":
    main()
