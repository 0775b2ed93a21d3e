"""Data-parallel training: two CPU processes (gloo) end with the same adapter."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from symlora.lab.train import RunConfig, train

    result = train(RunConfig.from_preset("digits", steps=8, batch_size=32, eval_every=8, device="cpu"), keep_model=False)
    save_file({k: v.contiguous() for k, v in result.trainable_state.items()}, f"{out}/rank{rank}.safetensors")
    losses = [h["loss"] for h in result.history if h.get("loss") is not None]
    torch.save({"first": losses[0], "last": losses[-1], "before": result.metric_before, "after": result.metric_after},
               f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_cpu_ranks_hold_identical_adapters_and_learn(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    a, b = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    assert a.keys() == b.keys() and len(a) > 0
    assert all(torch.equal(a[k], b[k]) for k in a), "gradients were averaged: both ranks hold the same weights"
    stats = torch.load(tmp_path / "rank0.pt")
    assert stats["after"] > stats["before"]
