"""Trainable parameters of LoRA vs SymLoRA at r=8 on two real architectures (random
weights, built from config: nothing is downloaded).

    .venv/bin/python bench/param_counts.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

import timm
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import symlora  # noqa: E402

R = 8


def vit_tiny():
    return timm.create_model("vit_tiny_patch16_224", pretrained=False)


def smollm2_135m():
    config = LlamaConfig(
        hidden_size=576,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        intermediate_size=1536,
        vocab_size=49152,
        tie_word_embeddings=True,
    )
    with torch.device("meta"):  # shapes only: no memory, no init time
        return LlamaForCausalLM(config)


CASES = [
    ("vit_tiny_patch16_224", "attn.qkv, attn.proj, mlp.fc1, mlp.fc2", vit_tiny, ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"]),
    ("SmolLM2-135M (config)", "q_proj, o_proj", smollm2_135m, ["q_proj", "o_proj"]),
]


def main() -> None:
    header = f"{'model':<22} {'targets':<38} {'method':<8} {'trainable':>11} {'all params':>13} {'trainable%':>10}"
    print(header)
    print("-" * len(header))
    for model_name, targets_text, build, targets in CASES:
        counts = {}
        for method in ("lora", "symlora"):
            model = symlora.inject(build(), symlora.AdapterConfig(method=method, r=R, target_modules=targets))
            counts[method] = c = symlora.count_parameters(model)
            print(f"{model_name:<22} {targets_text:<38} {method:<8} {c.trainable:>11,} {c.total:>13,} {c.trainable_percent:>9.3f}%")
        ratio = counts["symlora"].trainable / counts["lora"].trainable
        print(f"{'':<22} {'':<38} {'ratio':<8} {ratio:>11.3f}")


if __name__ == "__main__":
    main()
