"""The Dockerfile, checked without a Docker engine: its steps name things that exist and
agree with the Spaces front matter, and the commands it runs work here."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    joined = DOCKERFILE.replace("\\\n", " ")
    return [line.split(None, 1)[1].strip() for line in joined.splitlines() if line.startswith(name + " ")]


def front_matter() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("---")[1]
    return dict(line.split(":", 1) for line in block.strip().splitlines())


def test_spaces_front_matter_matches_the_container():
    meta = {k.strip(): v.strip() for k, v in front_matter().items()}
    assert meta["sdk"] == "docker"
    assert instructions("EXPOSE") == [meta["app_port"]] == ["7860"]
    cmd = " ".join(instructions("CMD"))
    assert '"--port", "7860"' in cmd and '"0.0.0.0"' in cmd
    for key in ("title", "emoji", "short_description", "license"):
        assert meta.get(key), key


def test_runs_as_uid_1000_on_python_311():
    assert instructions("FROM")[0].startswith("python:3.11")
    assert any("useradd -m -u 1000 user" in r for r in instructions("RUN"))
    assert instructions("USER") == ["user"]
    assert "GRADIO_ANALYTICS_ENABLED=False" in DOCKERFILE


def test_apt_packages_exist_and_copied_files_are_in_the_repo():
    apt = next(r for r in instructions("RUN") if "apt-get install" in r)
    packages = [w for w in apt.split("apt-get install", 1)[1].split("&&")[0].split() if not w.startswith("-")]
    assert {"fortunes", "dataset-fashion-mnist"} <= set(packages)
    for pkg in packages:  # the same packages the data loaders need here
        assert subprocess.run(["dpkg", "-s", pkg], capture_output=True).returncode == 0, pkg
    ignored = (ROOT / ".dockerignore").read_text().split()
    for copy in instructions("COPY"):
        if "--from=" in copy:  # from the wheel-building stage, not the repository
            continue
        for source in [w for w in shlex.split(copy) if not w.startswith("--")][:-1]:
            assert (ROOT / source).exists(), source
            assert source not in ignored, f"{source} is copied but .dockerignore drops it"
    for leftover in (".venv", ".git", "build", "dist", ".pytest_cache", "runs", "test-artifacts", "tests",
                     "**/__pycache__", "*.egg-info"):
        assert leftover in ignored, leftover


def test_the_image_gets_the_runtime_lock_only_and_no_source_tree():
    """Test-only packages stay out (they live in requirements-test.lock); the project arrives as
    an installed wheel from the build stage, never as `pip install .` of a copied tree."""
    def names(lock: str) -> set[str]:
        return {line.split("==")[0].lower() for line in (ROOT / lock).read_text().splitlines()
                if "==" in line and not line.startswith("#")}

    runtime, test_only = names("requirements.lock"), names("requirements-test.lock")
    assert {"pytest", "playwright", "peft"} <= test_only and not runtime & test_only
    installs = [r for r in instructions("RUN") if "pip install" in r and "-r " in r]
    assert installs and all("requirements-test.lock" not in r for r in installs)
    sources = [w for c in instructions("COPY") for w in [w for w in shlex.split(c) if not w.startswith("--")][:-1]]
    assert "." not in sources, "the whole tree is copied into an image stage"
    assert any("--from=wheel" in c for c in instructions("COPY"))


def test_first_use_preparation_and_a_quick_stop_are_built_in():
    assert any("python -m symlora.lab.prepare" in r for r in instructions("RUN"))
    assert "SYMLORA_CACHE=/home/user/" in DOCKERFILE  # owned by uid 1000, found at run time
    assert instructions("STOPSIGNAL") == ["SIGTERM"]
    assert "signal.SIGTERM" in (ROOT / "app" / "__main__.py").read_text()


def test_the_pip_steps_resolve_offline_against_the_lock():
    """`pip install --no-deps -r` of both locks (what `.ci/install --test` does): every pin is installed here."""
    pins = [line.split("==") for lock in ("requirements.lock", "requirements-test.lock")
            for line in (ROOT / lock).read_text().splitlines() if line and not line.startswith("#")]
    from importlib.metadata import PackageNotFoundError, version

    missing = []
    for name, pinned in pins:
        try:
            if version(name) != pinned:
                missing.append(f"{name}=={pinned} (have {version(name)})")
        except PackageNotFoundError:
            missing.append(name)
    assert not missing, missing


def test_the_container_command_starts_the_app_parser():
    cmd = re.findall(r'"([^"]+)"', instructions("CMD")[0])
    assert cmd[:3] == ["python", "-m", "app"]
    out = subprocess.run([sys.executable, "-m", "app", *cmd[3:], "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--port" in out.stdout
