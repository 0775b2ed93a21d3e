"""symlora: LoRA and SymLoRA adapters for any PyTorch model.

SymLoRA ("Towards Symmetric Low-Rank Adapters", arXiv 2504.03719) writes the update of a
square weight as ΔW = s·Q·diag(Λ)·Qᵀ: n·r + r weights where LoRA's ΔW = s·B·A needs 2·n·r.

    import symlora
    config = symlora.AdapterConfig(method="symlora", r=8, target_modules=["qkv", "proj"])
    symlora.inject(model, config)            # in place; the base is frozen
    print(symlora.count_parameters(model))   # trainable params: ... || all params: ...
    ...train...
    symlora.save_adapter(model, "out/")      # adapter_config.json + adapter_model.safetensors
    symlora.export_peft(model, "out-peft/")  # a plain LoRA adapter any PEFT user can load
"""

from .blocks import BlockLayout, equal_budget_rank
from .config import AdapterConfig
from .io import adapter_state_dict, export_peft, load_adapter, lora_factors, save_adapter
from .layers import AdapterLayer, LoraLayer, SymLoraLayer
from .model import (
    ParameterCount,
    adapter_layers,
    count_parameters,
    disable_adapters,
    eligible_modules,
    get_config,
    inject,
    merge,
    unmerge,
)
from .optim import param_groups
from .spectrum import spectrum, symmetric_fraction

__version__ = "0.1.0"

__all__ = [
    "AdapterConfig",
    "AdapterLayer",
    "BlockLayout",
    "LoraLayer",
    "ParameterCount",
    "SymLoraLayer",
    "adapter_layers",
    "adapter_state_dict",
    "count_parameters",
    "disable_adapters",
    "eligible_modules",
    "equal_budget_rank",
    "export_peft",
    "get_config",
    "inject",
    "load_adapter",
    "lora_factors",
    "merge",
    "param_groups",
    "save_adapter",
    "spectrum",
    "symmetric_fraction",
    "unmerge",
]
