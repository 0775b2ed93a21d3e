"""The built wheel works outside the source tree: installed into a throw-away venv, run from
an empty temporary directory, it finds its shipped model, examples and results.

The venv reuses the dependencies already installed here (a ``.pth`` file points at this
environment's site-packages; ``.pth`` files there, such as an editable install of this
project, are not processed), so only the wheel itself is installed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _clean_env(**extra: str) -> dict[str, str]:
    """No PYTHONPATH (the checkout must not be importable), offline, few threads."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="2", GRADIO_ANALYTICS_ENABLED="False", SYMLORA_OFFLINE="1", **extra)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    """Build the wheel from a copy of the sources (no build/ or *.egg-info left in the checkout)
    and install it, without dependencies, into a fresh venv that sees this environment's packages."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("symlora", "app", "assets"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    dist = work / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)],
                           capture_output=True, text=True, timeout=300, env=_clean_env())
    assert build.returncode == 0, build.stderr
    wheel = next(dist.glob("symlora-*.whl"))

    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "reuse-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
                             capture_output=True, text=True, timeout=300, env=_clean_env())
    assert install.returncode == 0, install.stderr
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    return {"bin": venv / "bin", "python": python, "site": site, "cwd": elsewhere, "wheel": wheel}


def run(installed, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=installed["cwd"], capture_output=True, text=True,
                          timeout=timeout, env=_clean_env())


def test_the_wheel_carries_the_model_examples_and_results_but_no_tests(installed):
    import zipfile

    names = zipfile.ZipFile(installed["wheel"]).namelist()
    for needed in ("symlora_assets/fmnist-vit/model.safetensors", "symlora_assets/fmnist-vit/config.json",
                   "symlora_assets/results/claim.json", "symlora_assets/examples/digit-7.png", "app/__main__.py"):
        assert needed in names, needed
    assert not [n for n in names if n.startswith(("tests/", "bench/")) or "screenshots" in n]


def test_the_installed_copy_is_imported_and_finds_its_assets(installed):
    code = ("import symlora, app.learn, app.tab_try; from symlora.lab.resources import assets_dir; "
            "print(symlora.__file__); print(assets_dir()); print(app.learn.RESULTS_FILE.is_file()); "
            "print(len(app.tab_try.example_images()))")
    out = run(installed, installed["python"], "-c", code)
    assert out.returncode == 0, out.stderr
    module, assets, results, examples = out.stdout.split()
    assert Path(module).is_relative_to(installed["site"]), "the source tree was imported, not the wheel"
    assert Path(assets) == installed["site"] / "symlora_assets"
    assert results == "True" and int(examples) >= 10


def test_presets_and_a_short_digits_run_from_another_directory(installed):
    presets = run(installed, installed["bin"] / "symlora", "presets", "--json")
    assert presets.returncode == 0, presets.stderr
    assert "digits" in {p["name"] for p in json.loads(presets.stdout)}

    out = installed["cwd"] / "run"
    train = run(installed, installed["bin"] / "symlora", "train", "--preset", "digits", "--steps", "3",
                "--device", "cpu", "--json", "--out", str(out))
    assert train.returncode == 0, train.stderr
    summary = json.loads(train.stdout.splitlines()[-1])
    assert summary["method"] == "symlora" and 0.0 <= summary["metric_after"] <= 1.0
    assert (out / "adapter_model.safetensors").is_file()


def test_the_lab_serves_its_page_from_another_directory(installed):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(installed["bin"] / "symlora-lab"), "--port", str(port)], cwd=installed["cwd"],
                            env=_clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, status = time.monotonic() + 240, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    status = response.status
                    break
            except OSError:
                time.sleep(1)
        assert status == 200, proc.stdout.read() if proc.poll() is not None else "no HTTP 200 within 240 s"
    finally:
        proc.terminate()  # SIGTERM: the app closes itself
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0
