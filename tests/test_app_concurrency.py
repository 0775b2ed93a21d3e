"""Ten students at once: ten gradio_client sessions each train, then predict.

Marked ``slow`` (about 1–2 min on a 2-core CPU, where runs take turns).  Checks that every
session finishes with its own results — same seed → identical curves, different seeds →
different curves — that no session sees another's runs, and that the process's memory
afterwards stays within a stated bound of before.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from app_harness import serve_app, train_args

gradio_client = pytest.importorskip("gradio_client")

pytestmark = pytest.mark.slow

SESSIONS = 10
STEPS = 5
MEMORY_BOUND_MB = 400


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def events(updates) -> list[dict]:
    out = []
    for u in updates:
        raw = u[6]
        e = json.loads(raw) if isinstance(raw, str) else (raw or {})
        if "kind" in e:
            out.append(e)
    return out


def test_ten_sessions_train_at_once_each_with_its_own_results(tmp_path):
    from PIL import Image

    with serve_app() as (demo, url):
        from app.settings import ui_values_from

        s = ui_values_from(demo.lab.default_config())
        args = train_args(demo, steps=STEPS)
        img = np.zeros((28, 28), np.uint8)
        img[6:22, 8:20] = 255
        Image.fromarray(img).save(tmp_path / "x.png")

        warm = gradio_client.Client(url, verbose=False)  # load model + data once, then measure
        list(warm.submit(*args, api_name="/train"))
        memory_before = rss_mb()

        seeds = [i % 5 for i in range(SESSIONS)]  # two sessions per seed
        results: dict[int, dict] = {}
        errors: list[BaseException] = []

        def student(i: int) -> None:
            try:
                client = gradio_client.Client(url, verbose=False)
                a = list(args)
                a[10] = seeds[i]
                ev = events(list(client.submit(*a, api_name="/train")))
                probs = client.predict(gradio_client.handle_file(str(tmp_path / "x.png")), "Latest run", s["model"],
                                       api_name="/predict")[2]
                results[i] = {"events": ev, "probs": probs, "session": client.session_hash}
            except BaseException as err:  # noqa: BLE001 — reported below
                errors.append(err)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=student, args=(i,)) for i in range(SESSIONS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        wall = time.perf_counter() - t0
        assert not errors, errors
        assert len(results) == SESSIONS

        def losses(i) -> dict[int, float]:
            """Loss by step as streamed (updates are time-throttled, so the steps shown vary)."""
            return {e["step"]: e["loss"] for e in results[i]["events"] if e["kind"] in ("step", "eval")}

        def same_curve(i, j) -> bool:
            a, b = losses(i), losses(j)
            common = set(a) & set(b)
            assert STEPS in common  # the last step is always shown
            return all(a[k] == b[k] for k in common) and (
                results[i]["events"][-1]["result"]["metric_after"] == results[j]["events"][-1]["result"]["metric_after"])

        for i in range(SESSIONS):
            final = results[i]["events"][-1]
            assert final["kind"] == "done" and final["result"]["steps_done"] == STEPS
            assert final["result"]["config"]["seed"] == seeds[i]
        for i in range(5):  # same seed → the same curve; different seeds → different curves
            assert same_curve(i, i + 5)
            assert results[i]["probs"]["tuned"] == pytest.approx(results[i + 5]["probs"]["tuned"], abs=1e-6)
        assert not same_curve(0, 1)
        assert results[0]["probs"]["tuned"] != pytest.approx(results[1]["probs"]["tuned"], abs=1e-6)
        assert demo.lab.runs.active() == 0

        time.sleep(1)
        memory_after = rss_mb()
        print(f"\n{SESSIONS} sessions × {STEPS} steps: {wall:.1f} s wall; process memory {memory_before:.0f} MB "
              f"before → {memory_after:.0f} MB after (bound +{MEMORY_BOUND_MB} MB); "
              f"heavy concurrency limit {demo.lab.heavy_limit}")
        assert memory_after - memory_before < MEMORY_BOUND_MB
