"""What drafting records for the refiner: the lower layers' keys, values and outputs over the prompt and the draft.

A refiner whose lower layers are the drafter's (causal, LoRA-free) takes these instead of running those layers
again (hybrid.refiner.cache: `prompt_from_lower`, `adopt_lower`). `recording` hooks the layers while the Drafter
writes; `LayerStates.from_drafting` then reads the rest from the drafter's KV cache.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch


@dataclass
class LayerStates:
    """What drafting computed in the first `layers` decoder layers at the draft slots it fed (all but the last token):
    their keys and values, and the outputs of the layers asked for. A refiner whose lower layers are the drafter's
    (causal, LoRA-free) reuses them instead of running those layers over the draft again."""

    inputs: torch.Tensor  # (B, M) the tokens fed at the draft slots 0..M-1
    keys: list  # per layer (B, H, M, D)
    values: list
    outputs: dict  # layer index -> (B, M, E) that layer's output
    # The same layers over the prompt (the prefill): per layer (B, H, P, D), and the last one's output (B, P, E).
    prompt_keys: list = field(default_factory=list)
    prompt_values: list = field(default_factory=list)
    prompt_hidden: torch.Tensor | None = None

    @classmethod
    def from_drafting(cls, cache, prompt_len: int, token_ids: torch.Tensor, outputs: dict, layers: int) -> "LayerStates":
        """The states of the first `layers` layers from the drafter's KV cache after drafting (`prompt_len` prompt slots,
        then every draft token but the last) and the `outputs` that `recording` kept: per layer index, the prefill's
        output and then one output per decode pass (its kept slots)."""
        fed = cache.get_seq_length() - prompt_len
        kept = [cache.layers[i] for i in range(layers)]
        return cls(token_ids[:, :fed], [layer.keys[:, :, prompt_len:] for layer in kept],
                   [layer.values[:, :, prompt_len:] for layer in kept],
                   {index: torch.cat(steps[1:], dim=1) if fed else steps[0][:, :0] for index, steps in outputs.items()},
                   [layer.keys[:, :, :prompt_len] for layer in kept], [layer.values[:, :, :prompt_len] for layer in kept],
                   outputs[layers - 1][0] if layers - 1 in outputs else None)


@contextmanager
def recording(model, indices):
    """While inside, the outputs of the decoder layers `indices` of `model` are appended, one per forward call, to the
    lists of the dict it yields (layer index -> list)."""
    outputs: dict[int, list] = {index: [] for index in indices}
    hooks = [model.get_decoder().layers[index].register_forward_hook(_keep_output(kept)) for index, kept in outputs.items()]
    try:
        yield outputs
    finally:
        for hook in hooks:
            hook.remove()


def trim_latest(outputs: dict, drop: int) -> None:
    """Drop the last `drop` slots of the latest output `recording` kept for every layer: the slots of a speculative pass
    whose proposals the drafter rejected (hybrid.drafting.decode_loop)."""
    for kept in outputs.values():
        kept[-1] = kept[-1][:, :-drop]


def _keep_output(kept: list):
    """A forward hook that appends a decoder layer's output (its hidden states) to `kept`."""
    def hook(module, args, output):
        kept.append(output[0] if isinstance(output, tuple) else output)

    return hook
