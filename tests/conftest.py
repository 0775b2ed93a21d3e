"""Shared tiny-model fixtures: seeded, built from code (never downloaded), seconds to run.

``make_vit(seed)`` / ``make_llama(seed)`` return a fresh model in eval mode; the same seed
gives bit-identical weights, so a second call is "a fresh copy of the same base model".
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

# Two threads by default (CI's machine has two cores); SYMLORA_TEST_THREADS=1 runs the
# suite on other kernels' summation orders — the numeric bounds must hold for both.
torch.set_num_threads(int(os.environ.get("SYMLORA_TEST_THREADS", "2")))
# Runs compute in float32 on every machine (a CPU with native bf16 would otherwise train
# under bf16 autocast: symlora.lab.precision), so the exact comparisons mean the same
# everywhere; tests/test_precision.py asks for bf16 itself.  Servers the tests start inherit it.
os.environ.setdefault("SYMLORA_CPU_DTYPE", "float32")

BENCH = Path(__file__).resolve().parents[1] / "bench"
VIT_CLASSES = 5


def load_bench(name: str) -> ModuleType:
    """``bench/<name>.py`` as a module (the benchmarks are scripts, not part of the package);
    registered in ``sys.modules``, where its dataclasses look their module up."""
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
LLAMA_VOCAB = 64


def tiny_vit(seed: int = 0):
    """A 2-block timm ViT, embed 16: ``qkv`` 16→48 (3 stacked blocks), ``proj`` 16→16,
    ``fc1`` 16→64 (4 stacked), ``fc2`` 64→16 (4 side by side), ``head`` 16→5."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    model = VisionTransformer(
        img_size=16, patch_size=8, embed_dim=16, depth=2, num_heads=2, mlp_ratio=4.0, num_classes=VIT_CLASSES
    )
    return model.eval()


def tiny_llama(seed: int = 0):
    """A 2-layer Llama with GQA (4 heads, 2 kv heads), hidden 32: ``q_proj``/``o_proj``
    32→32, ``k_proj``/``v_proj`` 32→16 (2 side-by-side blocks), ``gate/up`` 32→64,
    ``down_proj`` 64→32, untied ``lm_head``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=LLAMA_VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
        tie_word_embeddings=False,
    )
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


@pytest.fixture
def make_vit():
    return tiny_vit


@pytest.fixture
def make_llama():
    return tiny_llama


@pytest.fixture
def vit_batch():
    """(images, labels): a fixed batch of 4 16×16 RGB images."""
    g = torch.Generator().manual_seed(1234)
    return torch.randn(4, 3, 16, 16, generator=g), torch.randint(0, VIT_CLASSES, (4,), generator=g)


@pytest.fixture
def llama_batch():
    """A fixed batch of token ids, shape (2, 8)."""
    g = torch.Generator().manual_seed(1234)
    return torch.randint(0, LLAMA_VOCAB, (2, 8), generator=g)


@torch.no_grad()
def randomize_adapters(model, seed: int = 0, scale: float = 0.3) -> None:
    """Give every adapter a non-zero ΔW (Λ and LoRA's B start at zero)."""
    from symlora import adapter_layers

    g = torch.Generator().manual_seed(seed)
    for _, layer in adapter_layers(model):
        for p in layer.adapter_parameters().values():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) * scale)


@pytest.fixture
def randomize():
    return randomize_adapters


# The app, served in this process: one server per test module that asks for it.
@pytest.fixture(scope="module")
def served(request):
    """(demo, url) of the app running in this process, the url ending in ``/``.  A module
    that sets ``SERVE_HEARTBEAT = 1`` gets Gradio heartbeats every second, so a closed tab
    is noticed within ~1 s (the browser tests)."""
    from app_harness import serve_app

    with serve_app(heartbeat=getattr(request.module, "SERVE_HEARTBEAT", None)) as (demo, url):
        yield demo, url.rstrip("/") + "/"


@pytest.fixture(scope="module")
def client(served):
    """A ``gradio_client.Client`` on the module's server."""
    gradio_client = pytest.importorskip("gradio_client")
    return gradio_client.Client(served[1], verbose=False)


@pytest.fixture(scope="module")
def browser():
    """A headless chromium context (see ``app_harness.chromium_context``) for the module."""
    from app_harness import chromium_context

    with chromium_context() as context:
        yield context
