"""BlockLayout, the one home of the block arithmetic, against counts of real layers and
brute-force searches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import symlora
from symlora import AdapterConfig
from symlora.blocks import (
    BlockLayout,
    block_diagonal,
    equal_budget_rank,
    rank_for_budget,
    total_params,
)

# (in, out) → layout, k, n, k_in, k_out
SHAPES = {
    (6, 6): ("square", 1, 6, 1, 1),
    (4, 12): ("stacked", 3, 4, 1, 3),  # fused qkv
    (12, 4): ("side", 3, 4, 3, 1),  # MLP fc2
    (1, 5): ("stacked", 5, 1, 1, 5),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_layout_of_each_shape(shape):
    lay = BlockLayout(*shape)
    assert lay.symmetric
    assert (lay.layout, lay.k, lay.n, lay.k_in, lay.k_out) == SHAPES[shape]
    assert (lay.k_out * lay.n, lay.k_in * lay.n) == (shape[1], shape[0])  # the blocks tile W exactly


def test_a_shape_without_square_blocks_is_refused_with_one_line():
    lay = BlockLayout(6, 9)
    assert not lay.symmetric
    assert lay.params("lora", 2) == 2 * (6 + 9)  # LoRA covers any shape
    for what in ("layout", "k", "n", "k_in", "k_out"):
        with pytest.raises(ValueError, match="in=6, out=9"):
            getattr(lay, what)
    with pytest.raises(ValueError, match="whole multiples"):
        lay.params("symlora", 2)
    with pytest.raises(ValueError, match="method"):
        lay.params("dora", 2)
    with pytest.raises(ValueError, match="positive"):
        BlockLayout(0, 4)


@pytest.mark.parametrize("shape", [(6, 6), (4, 12), (12, 4), (6, 9)])
@pytest.mark.parametrize("method", ["lora", "symlora"])
def test_params_equal_the_layers_trainable_count(shape, method):
    lay = BlockLayout(*shape)
    if method == "symlora" and not lay.symmetric:
        with pytest.raises(ValueError, match="whole multiples"):
            symlora.inject(nn.Sequential(nn.Linear(*shape)), AdapterConfig(method=method, r=3, target_modules=["0"]))
        return
    for r in (1, 3):
        model = symlora.inject(nn.Sequential(nn.Linear(*shape)), AdapterConfig(method=method, r=r, target_modules=["0"]))
        assert symlora.count_parameters(model).trainable == lay.params(method, r)
        assert model[0].block_layout == lay


@pytest.mark.parametrize("shape", [(6, 6), (4, 12), (12, 4)])
def test_split_and_join_are_inverse_and_follow_the_weight(shape):
    lay = BlockLayout(*shape)
    w = torch.arange(shape[0] * shape[1], dtype=torch.float64).reshape(shape[1], shape[0])  # (out, in)
    blocks = lay.split(w)
    assert blocks.shape == (lay.k, lay.n, lay.n)
    n = lay.n
    for b in range(lay.k):  # block b: rows b·n… when stacked, columns b·n… when side by side
        expected = w[:, b * n:(b + 1) * n] if lay.k_in > 1 else w[b * n:(b + 1) * n, :]
        assert torch.equal(blocks[b], expected)
    assert torch.equal(lay.join(blocks), w)


def test_block_diagonal_places_column_blocks_on_the_diagonal():
    t = torch.arange(12.0).reshape(2, 6)  # 3 blocks of 2 columns
    d = block_diagonal(t, 3)
    assert d.shape == (6, 6)
    for b in range(3):
        assert torch.equal(d[2 * b:2 * b + 2, 2 * b:2 * b + 2], t[:, 2 * b:2 * b + 2])
    assert d.abs().sum() == t.abs().sum()  # nothing off the diagonal
    assert block_diagonal(t, 1) is t


def brute_force_rank(layouts_source, layouts_target, source, target, r, max_rank):
    """The old search: every rank, closest count first, the smaller rank on a tie."""
    budget = total_params(layouts_source, source, r)
    return min(range(1, max_rank + 1), key=lambda x: abs(total_params(layouts_target, target, x) - budget))


MODELS = {
    "vit-attention": [BlockLayout(192, 576), BlockLayout(192, 192)],
    "vit-all": [BlockLayout(16, 48), BlockLayout(16, 16), BlockLayout(16, 64), BlockLayout(64, 16)],
    "llama-gqa": [BlockLayout(576, 576), BlockLayout(576, 192), BlockLayout(576, 192), BlockLayout(576, 576)],
    "odd": [BlockLayout(3, 3), BlockLayout(2, 8)],  # k > n: SymLoRA costs more per rank than LoRA
}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("source, target", [("lora", "symlora"), ("symlora", "lora")])
def test_equal_budget_rank_is_the_closest_count(model, source, target):
    layouts = MODELS[model]
    for r in range(1, 65):
        expected = brute_force_rank(layouts, layouts, source, target, r, 1000)
        assert equal_budget_rank(layouts, r, source, target) == expected, r
        assert equal_budget_rank(layouts, r, source, target, max_rank=64) == min(expected, 64)


def test_equal_budget_on_square_layers_is_just_under_twice_the_rank():
    lay = BlockLayout(192, 192)
    for r in (1, 4, 8, 16):
        rb = lay.equal_budget_rank(r)
        assert rb in (2 * r - 1, 2 * r)
        assert abs(lay.params("symlora", rb) - lay.params("lora", r)) <= lay.params_per_rank("symlora") / 2


def test_rank_for_budget_with_each_methods_own_layers():
    lora = [BlockLayout(16, 16), BlockLayout(16, 24)]  # the second has no square blocks: LoRA only
    sym = [BlockLayout(16, 16)]
    for r in (1, 2, 8):
        budget = total_params(lora, "lora", r)
        assert rank_for_budget(sym, "symlora", budget) == brute_force_rank(lora, sym, "lora", "symlora", r, 1000)
    with pytest.raises(ValueError, match="at least one"):
        rank_for_budget([], "symlora", 100)


def test_the_older_symmetric_blocks_spelling_agrees():
    from symlora.layers import symmetric_blocks

    for shape, (layout, k, n, _, _) in SHAPES.items():
        assert symmetric_blocks(*shape) == (layout, k, n)
    assert symmetric_blocks(6, 9) is None
