"""Low-rank adapters on a block drafter's copied layers (recipe key `block_drafter.lora_rank`): the copies keep the
drafter's own top-layer weights, frozen, and only LoRA's A and B train (peft). Such a block drafter saves its adapters,
its input map and its mask embedding, a few MB, and rebuilds the frozen copies from the drafter when it loads.
"""

from __future__ import annotations

import warnings

from torch import nn

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
FROZEN = ".base_layer."  # in the name of a frozen copied weight (peft keeps the adapted layer there)


def add_adapters(layers: nn.Module, rank: int) -> None:
    """LoRA of `rank` (alpha = 2 x rank, B at zero: the copies start as the drafter's own layers) on every linear layer of
    `layers`, whose other weights are frozen."""
    from peft import LoraConfig, inject_adapter_in_model

    layers.requires_grad_(False)
    with warnings.catch_warnings():  # peft calls a transformers API that warns about its own deprecation
        warnings.filterwarnings("ignore", category=FutureWarning)
        inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=TARGETS, bias="none"), layers)
    for name, parameter in layers.named_parameters():
        parameter.requires_grad_("lora_" in name)


def is_frozen_copy(name: str) -> bool:
    """Whether a block drafter's weight of this name is a frozen copy of the drafter's (not saved: rebuilt on load)."""
    return FROZEN in name


def merge_adapters(layers: nn.Module) -> int:
    """Fold each LoRA into its copy and put the plain linear layer back: the same outputs (to float rounding) for the
    price of a pass over full copies, without the adapters' own small matmuls. Returns how many layers were merged."""
    from peft.tuners.lora import LoraLayer

    merged = 0
    for name, module in list(layers.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(layers.get_submodule(parent) if parent else layers, child, module.get_base_layer())
            merged += 1
    return merged
