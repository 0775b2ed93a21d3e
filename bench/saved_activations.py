"""Activation memory a training step keeps for its backward, per configuration of adapter_speed.py.

On a CPU the speed benchmark has no allocator statistics to read, so this script counts what
autograd saves during one forward (every distinct tensor storage handed to a saved-tensor
hook, parameters excluded): the memory that stays live from the forward to the backward and
sets the peak.  ``--against REV`` adds SymLoRA and LoRA rows from a git revision's core.

    python bench/saved_activations.py                        # the vision preset's ViT, fp32
    python bench/saved_activations.py --against 39e4ae2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import adapter_speed as bench  # noqa: E402


def saved_bytes(trial: bench.Trial) -> int:
    """Bytes of the distinct non-parameter storages autograd saves in one forward."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        storages[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        trial.work.loss(trial.runner, trial.batch)
    params = {p.untyped_storage().data_ptr() for p in trial.model.parameters()}
    return sum(n for ptr, n in storages.items() if ptr not in params)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="vit-fmnist")
    p.add_argument("--methods", default="floor,peft-lora,lora,symlora")
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--against", default=None, metavar="REV")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    configs = [(m, "default") for m in args.methods.split(",")]
    ref_dir = tempfile.TemporaryDirectory()
    if args.against:
        from layer_overhead import unpack_ref

        bench.REF["@" + args.against] = unpack_ref(args.against, Path(ref_dir.name))
        configs += [(m, "@" + args.against) for m in ("lora", "symlora") if m in args.methods.split(",")]
    print("MiB autograd saves in one forward (parameters excluded), CPU, fp32")
    for work in bench.workloads(args.models.split(","), False, None):
        for method, variant in configs:
            trial = bench.Trial(work, method, variant, False, "train", args.r, torch.device("cpu"))
            print(f"{work.name:16s} {method:10s} {variant:10s} {saved_bytes(trial) / 2**20:8.2f}")


if __name__ == "__main__":
    main()
