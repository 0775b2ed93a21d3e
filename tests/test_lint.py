"""Lint and types as part of the test run: `ruff check` over the whole project and strict
`mypy` over the adapter library (both configured in pyproject.toml).  A failure prints the
findings as the tools report them, file:line first, so the fix is one click away."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_tool(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"{module} is not installed: it comes with the test set (bash .ci/install --test)")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_ruff_finds_nothing_in_the_project():
    out = run_tool("ruff", "check", "--output-format", "concise", ".")
    assert out.returncode == 0, f"ruff check . found:\n{out.stdout}{out.stderr}"


def test_mypy_finds_nothing_in_the_adapter_library():
    """Files, strictness and the lab's exclusion come from pyproject.toml: every module of
    symlora/ (a new one is in by itself), none of symlora/lab/."""
    out = run_tool("mypy")
    assert out.returncode == 0, f"mypy found:\n{out.stdout}{out.stderr}"
    core = len(list((ROOT / "symlora").glob("*.py")))
    assert f"no issues found in {core} source files" in out.stdout, out.stdout
