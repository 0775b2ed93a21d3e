"""Follow the rank ``r`` from the Train tab's handler to the adapter layer, and count the way.

    PYTHONPATH=. python bench/r_path.py            # this checkout
    PYTHONPATH=/path/to/old/checkout python bench/r_path.py

A run of the digits preset with ``r = 7`` (a value nothing else uses) goes the way the Train
tab's Start sends it: the slider's preprocessing (``app.checks``) → the handler's control
values → the app's run object → the engine
(``app.runner.stream``, one step) → the layers.  A profiler records every call into the
project's code whose arguments carry the rank (the number itself under the name ``r``, or an
object, dict or list holding it); the script prints

* the files and functions it passes through, in order, up to the first adapter layer's
  ``__init__``, and the *moves* (a call that hands the rank — or an object holding it, ``self``
  included — from one function to another: a change of function in the record); the Gradio
  handler itself (``tab_train.train``, which hands the control values on) is not traced;
* the *boxes*: objects built to hold it (``Settings``, ``RunConfig``, ``AdapterConfig``) and
  plain dicts copied from them (``dataclasses.asdict``);
* the *validations*: calls of ``symlora.config.check_int`` on ``r``.

It reads the code as it is (old ``Settings`` API or the new ``run_config_from_ui``), so the
same command measures before and after a change.  Counts, not timings: any machine gives the
same numbers.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
R = 7
ROOT = Path(os.environ.get("PYTHONPATH", ".").split(os.pathsep)[0] or ".").resolve()


def carries(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` holds the rank: the object's ``r``, its ``adapter.r``, a dict's "r",
    or an element of a list/tuple of control values."""
    if depth > 2:
        return False
    if isinstance(value, dict):
        return value.get("r") == R and not isinstance(value.get("r"), bool) or any(
            carries(v, depth + 1) for k, v in value.items() if k in ("adapter", "config"))
    if isinstance(value, (list, tuple)) and len(value) < 40:
        return any(type(v) in (int, float) and v == R for v in value)
    r = getattr(value, "r", None) if not isinstance(value, type) else None
    if type(r) in (int, float) and r == R:
        return True
    return carries(getattr(value, "adapter", None), depth + 1) if hasattr(value, "adapter") else False


def main() -> None:
    import importlib

    import symlora.config as core
    from app import runner
    from app import settings as app_settings

    for name in ("symlora.lab.runconfig", "symlora.lab.train", "symlora.lab.engine", "symlora.lab.multirun"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass

    rows: list[tuple[str, str]] = []
    boxes: list[str] = []
    validations: list[str] = []
    real_check_int, real_asdict = core.check_int, dataclasses.asdict

    def check_int(name: str, value: Any, *args: Any, **kwargs: Any) -> int:
        if name == "r" and value == R:
            frame = sys._getframe(1)
            validations.append(f"{Path(frame.f_code.co_filename).relative_to(ROOT)}:{frame.f_code.co_name}")
        return real_check_int(name, value, *args, **kwargs)

    def asdict(obj: Any, *args: Any, **kwargs: Any) -> Any:
        out = real_asdict(obj, *args, **kwargs)
        if carries(out):
            frame = sys._getframe(1)
            boxes.append(f"dict (asdict) in {Path(frame.f_code.co_filename).name}:{frame.f_code.co_name}")
        return out

    reached = []  # set once the first adapter layer is built: the path ends there

    def arguments(frame: Any) -> dict[str, Any]:
        code = frame.f_code
        n = code.co_argcount + code.co_kwonlyargcount
        args = {name: frame.f_locals.get(name) for name in code.co_varnames[:n]}
        if code.co_flags & 0x04:  # *args
            args["*"] = frame.f_locals.get(code.co_varnames[n])
        return args

    def holds_r(args: dict[str, Any]) -> bool:
        return any((k == "r" and type(v) in (int, float) and v == R) or carries(v) for k, v in args.items())

    def tracer(frame: Any, event: str, arg: Any) -> None:
        if event != "call":
            return
        code = frame.f_code
        if code.co_name == "__init__" and code.co_filename.startswith("<"):  # a dataclass's generated __init__
            args = arguments(frame)
            owner = type(args.get("self")).__name__
            if owner in ("Settings", "RunConfig", "AdapterConfig") and holds_r({k: v for k, v in args.items()
                                                                                   if k != "self"}):
                caller = frame.f_back.f_code
                boxes.append(f"{owner} in {Path(caller.co_filename).name}:{caller.co_name}")
            return
        if reached:
            return
        try:
            rel = Path(code.co_filename).resolve().relative_to(ROOT)
        except ValueError:
            return
        if rel.parts[0] not in ("app", "symlora") or code.co_name.startswith("<"):
            return
        if holds_r(arguments(frame)):
            here = (str(rel), code.co_name)
            if not rows or rows[-1] != here:
                rows.append(here)
            if rel.name == "layers.py" and code.co_name == "__init__":
                reached.append(here)

    core.check_int = check_int
    dataclasses.asdict = asdict
    for mod in list(sys.modules.values()):  # modules that imported the names themselves
        if getattr(mod, "check_int", None) is real_check_int:
            mod.check_int = check_int
    values = ("digits", "fmnist-vit", "mnist-5k", "symlora", R, 16.0, "attn.qkv,attn.proj", 5e-3, 1, 8, 0, "cpu")
    import gradio as gr

    from app.checks import guard_number

    slider = guard_number(gr.Slider(1, 64, step=1), "r")  # the Train tab's r slider, as app.checks guards it
    sys.setprofile(tracer)
    threading.setprofile(tracer)
    try:
        slider.preprocess(R)  # what Gradio does with the slider's value before the handler runs
        if hasattr(app_settings, "run_config_from_ui"):  # the Train tab's handler, after issue 13
            run = app_settings.run_config_from_ui(*values)
        else:  # before: Settings.from_values, then Settings.to_run_config inside runner.stream
            run = app_settings.Settings.from_values(*values)
        for event, _, _ in runner.stream(run, stop=None, label="r-path", keep_model=False):
            if event.is_final:
                break
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
        dataclasses.asdict = real_asdict
        for mod in list(sys.modules.values()):
            if getattr(mod, "check_int", None) is check_int:
                mod.check_int = real_check_int

    files = list(dict.fromkeys(f for f, _ in rows))
    print(f"checkout: {ROOT}")
    print(f"path of r (r = {R}) from the handler's values to the first adapter layer: {len(rows)} calls "
          f"({len(rows) - 1} moves) in {len(files)} files")
    for f, fn in rows:
        print(f"  {f}:{fn}")
    print(f"files: {', '.join(files)}")
    print(f"boxes over the whole run ({len(boxes)}):")
    for b in boxes:
        print(f"  {b}")
    print(f"validations of r over the whole run ({len(validations)} calls, {len(set(validations))} places):")
    for v in dict.fromkeys(validations):
        print(f"  {v} ×{validations.count(v)}")


if __name__ == "__main__":
    main()
