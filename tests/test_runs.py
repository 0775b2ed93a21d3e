"""Restoring a tuned model from saved tensors refuses weights that do not belong to it."""

from __future__ import annotations

import pytest
import torch

import symlora
from symlora.lab.runs import restore_tuned
from symlora.lab.zoo import load_model
from numerics import assert_same_up_to_rounding, rounding_noise


@pytest.fixture
def vit():
    return load_model("fmnist-vit")


def _config() -> dict:
    return symlora.AdapterConfig(method="symlora", r=2, target_modules=["attn.proj"]).to_dict()


def _trained_state() -> tuple[dict[str, torch.Tensor], torch.nn.Module]:
    torch.manual_seed(0)
    tuned = load_model("fmnist-vit")
    symlora.inject(tuned.model, symlora.AdapterConfig.from_dict(_config()))
    with torch.no_grad():
        for p in tuned.model.parameters():
            if p.requires_grad:
                p.normal_()
    return symlora.adapter_state_dict(tuned.model), tuned  # PEFT-prefixed keys


def test_restored_adapter_reproduces_the_saved_update(vit):
    state, tuned = _trained_state()
    restored = restore_tuned(vit, state=state, adapter_config=_config())
    x = vit.preprocess(torch.randint(0, 256, (2, 28, 28), dtype=torch.uint8))
    noise = rounding_noise(tuned.model.eval(), lambda m, dtype: m(x.to(dtype)))
    with torch.no_grad():
        out = restored.model(x)
        assert_same_up_to_rounding(out, tuned.model(x), noise, "restored vs saved")
        base_out = load_model("fmnist-vit").model.eval()(x)
    assert (out - base_out).abs().max() > 1e3 * noise, "the adapter changed nothing"


def test_weights_of_another_shape_or_name_are_refused(vit):
    state, _ = _trained_state()
    key = next(k for k in state if k.endswith("lora_Q"))
    state[key] = torch.zeros(5, 2)
    with pytest.raises(ValueError, match="shape"):
        restore_tuned(vit, state=state, adapter_config=_config())
    with pytest.raises(ValueError, match="do not fit.*unexpected"):
        restore_tuned(load_model("fmnist-vit"), state={"encoder.layer.0.q_proj.lora_A.weight": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="missing"):
        restore_tuned(load_model("fmnist-vit"), state={}, adapter_config=_config())
