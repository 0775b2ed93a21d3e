"""The core needs torch, numpy and safetensors only: ``import symlora`` and the whole adapter
API work on a plain torch model while timm and the other lab/app packages cannot be imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("timm", "torchvision", "tqdm", "transformers", "gguf", "gradio", "plotly", "PIL", "peft")

SCRIPT = textwrap.dedent(
    """
    import sys, tempfile

    BLOCKED = set(sys.argv[1].split(","))

    from importlib.machinery import PathFinder

    class WithoutExtras(PathFinder):  # what `pip install symlora` without extras looks like:
        @classmethod                  # the blocked packages are simply not found
        def find_spec(cls, name, path=None, target=None):
            return None if name.split(".")[0] in BLOCKED else super().find_spec(name, path, target)

    sys.meta_path[:] = [WithoutExtras if f is PathFinder else f for f in sys.meta_path]
    for name in BLOCKED:
        try:
            __import__(name)
        except ModuleNotFoundError:
            pass
        else:
            raise AssertionError(f"{name} was not blocked")

    import torch
    from torch import nn
    import symlora

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    x = torch.randn(4, 8)
    base = model(x).detach()
    config = symlora.AdapterConfig(method="symlora", r=2, lora_alpha=4, target_modules=["0", "2"], modules_to_save=["4"])
    symlora.inject(model, config)
    counts = symlora.count_parameters(model)
    assert 0 < counts.trainable < counts.total, counts
    opt = torch.optim.AdamW(symlora.param_groups(model, lr=1e-2))
    for _ in range(3):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    tuned = model(x).detach()
    assert not torch.allclose(tuned, base)
    assert set(symlora.spectrum(model)) == {"0", "2"}
    symlora.merge(model)
    assert torch.allclose(model(x), tuned, atol=1e-5)
    symlora.unmerge(model)
    with tempfile.TemporaryDirectory() as d:
        symlora.save_adapter(model, d + "/a")
        symlora.export_peft(model, d + "/p")
        torch.manual_seed(0)
        fresh = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
        symlora.load_adapter(fresh, d + "/a")
        assert torch.allclose(fresh(x), tuned, atol=1e-5)
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not leaked, leaked
    print("ok")
    """
)


def test_the_adapter_api_works_without_timm_or_other_extras():
    out = subprocess.run([sys.executable, "-c", SCRIPT, ",".join(BLOCKED)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_the_package_requires_only_torch_numpy_safetensors():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {dep.split(">")[0].split("=")[0].split("<")[0].strip() for dep in project["dependencies"]}
    assert names == {"torch", "numpy", "safetensors"}
    extras = project["optional-dependencies"]
    assert any(d.startswith("timm") for d in extras["lab"]) and any(d.startswith("transformers") for d in extras["text"])
    assert any(d.startswith("gradio") for d in extras["app"])
