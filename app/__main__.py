"""Start SymLoRA Lab: ``python -m app`` or the ``symlora-lab`` console script.

Listens on 127.0.0.1:7860 by default; ``--host``/``--port`` or the usual
``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT`` change that (``--host 0.0.0.0`` in Docker /
Hugging Face Spaces).  Gradio's usage analytics are off unless
``GRADIO_ANALYTICS_ENABLED`` says otherwise.  SIGTERM (``docker stop``, a Space restart)
closes the app and exits at once — as PID 1 in a container the default action would be ignored.
Once the page is served, the model libraries are imported in the background, so that the first
run does not wait for them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from typing import Any

log = logging.getLogger("app")
STOP_GRACE_S = 2.0  # after SIGTERM, exit at the latest this long after closing began
# Imported lazily by the presets' models; a cold import of the text stack alone took 4–6 s
# of a first SmolLM2 load here (the model itself then loads in under a second).
WARM_MODULES = ("timm", "transformers", "transformers.models.llama.modeling_llama", "tokenizers")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="symlora-lab", description="SymLoRA Lab: fine-tune models live in the browser.")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="interface to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                        help="port (default: $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live tunnel (needs internet)")
    return parser.parse_args(argv)


def configure_threads() -> None:
    """On a CPU, give the cores to training: everything but the engine's training thread
    (pages, model loading, predictions) computes on one thread, set before any arithmetic
    (a thread keeps the OpenMP workers it once started; see :mod:`symlora.lab.threads`).
    The training thread's own count is :func:`app.lab.training_threads`."""
    import torch

    if torch.cuda.is_available():
        if os.environ.get("SYMLORA_THREADS", "").isdigit():
            torch.set_num_threads(int(os.environ["SYMLORA_THREADS"]))
        return
    torch.set_num_threads(1)


def stop_on_sigterm(demo: Any, *, grace_s: float = STOP_GRACE_S) -> threading.Event:
    """Make SIGTERM close ``demo`` (which ends ``launch``'s blocking loop, so ``main``
    returns) and, should closing hang on an open connection, exit after ``grace_s``.
    The returned event is set once SIGTERM came."""
    stopping = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        log.info("SIGTERM: closing SymLoRA Lab")
        stopping.set()
        deadline = threading.Timer(grace_s, os._exit, args=(0,))
        deadline.daemon = True
        deadline.start()
        demo.close()

    signal.signal(signal.SIGTERM, handler)
    return stopping


def warm_imports(modules: tuple[str, ...] = WARM_MODULES) -> threading.Thread:
    """Import ``modules`` in a daemon thread (missing ones are skipped): the first vision or
    text run then starts without paying for them."""

    def work() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception as exc:  # an optional extra that is not installed
                log.debug("not warming %s: %s", name, exc)

    thread = threading.Thread(target=work, name="warm-imports", daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    for name in ("symlora", "app"):
        logging.getLogger(name).setLevel(logging.INFO)
    configure_threads()
    from .ui import build_demo, launch

    demo = build_demo()
    stopping = stop_on_sigterm(demo)
    try:
        launch(demo, server_name=args.host, server_port=args.port, share=args.share, prevent_thread_lock=True)
        warm_imports()
        demo.block_thread()  # until Ctrl+C or SIGTERM (which closes the demo)
    except Exception:
        if not stopping.is_set():  # a SIGTERM during start-up makes launch's own checks fail
            raise
    if not stopping.is_set():  # Ctrl+C: runs still training stop at their next step, before
        from .sessions import close_engines  # the interpreter's teardown (which they would abort)

        close_engines()
        return
    # Closed by SIGTERM: the server is down and runs live only in memory. Skip the
    # interpreter's teardown of torch/gradio (measured ~2.5 s) so a stop takes < 1 s.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
