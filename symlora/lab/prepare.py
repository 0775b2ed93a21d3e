"""Do every one-time preparation now, so that the first run later starts at once.

    python -m symlora.lab.prepare            # all offline models that need one
    python -m symlora.lab.prepare smollm2-135m

Today that is the SmolLM2 GGUF → float32 safetensors conversion (13–60 s, ~520 MB written
to :func:`symlora.lab.zoo.smollm2_cache_dir`, i.e. ``$SYMLORA_CACHE`` when set).  The Docker
image runs this at build time, so a fresh container never converts on a user's first text run.
Models whose packages are missing are reported and skipped unless named explicitly.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .data import MissingDependencyError

log = logging.getLogger(__name__)


def _smollm2() -> Path:
    from .zoo import prepare_smollm2

    return prepare_smollm2()


# model name → the step that makes its first load fast (returns what it wrote)
STEPS: dict[str, Callable[[], Path]] = {"smollm2-135m": _smollm2}


def prepare(models: Sequence[str] = (), *, strict: bool = False) -> dict[str, Path]:
    """Run the preparation of ``models`` (default: all of :data:`STEPS`).

    A model whose optional dependency is missing is skipped with a warning, or raises
    :class:`~symlora.lab.data.MissingDependencyError` when ``strict``.
    """
    unknown = [m for m in models if m not in STEPS]
    if unknown:
        raise ValueError(f"nothing to prepare for {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    done: dict[str, Path] = {}
    for name in models or STEPS:
        try:
            done[name] = STEPS[name]()
        except MissingDependencyError as exc:
            if strict:
                raise
            log.warning("skipped %s: %s", name, exc)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m symlora.lab.prepare", description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help=f"models to prepare (default: all of {', '.join(STEPS)})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        done = prepare(args.models, strict=bool(args.models))
    except (ValueError, MissingDependencyError) as exc:
        print(f"python -m symlora.lab.prepare: {exc}", file=sys.stderr)
        return 2
    for name, path in done.items():
        print(f"{name}: ready in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
