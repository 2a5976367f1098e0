"""The sequences a block drafter trains on: token ids with the drafter's own keys, values and states over them
(hybrid.drafting.block_training writes them), kept in one safetensors file for reuse by other runs.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm


@dataclass
class Sequence:
    """One self-distilled sequence: its ids (prompt, then the continuation), where the continuation starts, and per
    top layer the block drafter may read, the drafter's keys and values ((kv_heads, T - 1, d) each) and its input
    states ((T - 1, H)) at every position but the last."""

    ids: torch.Tensor
    start: int
    context: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    greedy: torch.Tensor | None = None  # plain text: the drafter's choice after each position; None: ids is its own
    final: torch.Tensor | None = None  # the drafter's final normed states ((T - 1, H)), when kept
    lower: torch.Tensor | None = None  # the drafter's states entering layer `lower_layer` ((T - 1, H)), when read
    lower_layer: int = 0

    def states(self, reads=("entering",)) -> torch.Tensor:
        """(T - 1, len(reads) * H): the drafter's states a block drafter reads (hybrid.drafting.block_drafter.READS)."""
        if "final" in reads and self.final is None:
            raise ValueError("these sequences keep no final states: read them again with final=True")
        return torch.cat([self.context[0][2] if r == "entering" else self.final for r in reads], dim=-1)

    def targets(self, anchor: int, block: int) -> torch.Tensor:
        """What greedy drafting writes at anchor + 1 .. anchor + block after this sequence's first anchor + 1 tokens
        (-100 where it is unknown: past the end, or, in plain text, after the text has left the greedy path)."""
        if self.greedy is None:
            return torch.cat([self.ids, torch.full((block + 1,), -100)])[anchor + 1 : anchor + 1 + block]
        targets = torch.full((block,), -100)
        for slot in range(min(block, len(self.greedy) - anchor)):
            targets[slot] = self.greedy[anchor + slot]
            if anchor + slot + 1 >= len(self.ids) or self.ids[anchor + slot + 1] != self.greedy[anchor + slot]:
                break
        return targets

    @property
    def tokens(self) -> int:
        return len(self.ids) - self.start


def save_sequences(sequences: list[Sequence], path) -> None:
    """The sequences in one safetensors file (ids and keys/values concatenated, with their lengths and starts), so that
    another training run can reuse them without writing them again."""
    from safetensors.torch import save_file

    tensors = {"ids": torch.cat([s.ids for s in sequences]), "lengths": torch.tensor([len(s.ids) for s in sequences]),
               "starts": torch.tensor([s.start for s in sequences])}
    for layer in range(len(sequences[0].context)):
        tensors[f"keys.{layer}"] = torch.cat([s.context[layer][0] for s in sequences], dim=1).contiguous()
        tensors[f"values.{layer}"] = torch.cat([s.context[layer][1] for s in sequences], dim=1).contiguous()
        tensors[f"states.{layer}"] = torch.cat([s.context[layer][2] for s in sequences], dim=0).contiguous()
    if all(s.final is not None for s in sequences):
        tensors["final"] = torch.cat([s.final for s in sequences], dim=0).contiguous()
    save_file(tensors, str(path))


def load_sequences(path) -> list[Sequence]:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    layers = sum(1 for name in tensors if name.startswith("keys."))
    sequences, at, seen = [], 0, 0
    for length, start in zip(tensors["lengths"].tolist(), tensors["starts"].tolist()):
        context = [(tensors[f"keys.{i}"][:, seen : seen + length - 1], tensors[f"values.{i}"][:, seen : seen + length - 1],
                    tensors[f"states.{i}"][seen : seen + length - 1]) for i in range(layers)]
        final = tensors["final"][seen : seen + length - 1] if "final" in tensors else None
        sequences.append(Sequence(tensors["ids"][at : at + length], start, context, final=final))
        at, seen = at + length, seen + length - 1
    return sequences


@contextmanager
def layer_inputs(model, layers, final: bool = False):
    """While inside, the hidden states entering each decoder layer of `layers` (float32) are appended, one per forward
    call, to the lists of the dict it yields (layer index -> list); with `final`, the final norm's outputs too, under
    "final"."""
    states = {i: [] for i in layers}
    hooks = [model.model.layers[i].register_forward_pre_hook(
        lambda module, args, kwargs, i=i: states[i].append((args[0] if args else kwargs["hidden_states"]).float()), with_kwargs=True)
        for i in layers]
    if final:
        states["final"] = []
        hooks.append(model.model.norm.register_forward_hook(lambda module, args, output: states["final"].append(output.float())))
    try:
        yield states
    finally:
        for hook in hooks:
            hook.remove()


class _Enough(Exception):
    """Raised by a hook to end a forward pass once the states it needs are read."""


@torch.inference_mode()
def with_states(drafter, sequences: list[Sequence], final: bool = False, lower: int = 0, batch_size: int = 8,
                progress: bool = True) -> list[Sequence]:
    """The sequences, each with the drafter's final normed states over it (`final`) and its states entering layer
    `lower` (`lower` > 0), read in one pass where it keeps none; a pass for the lower states alone stops there."""
    model = drafter.model
    missing = [s for s in sequences if (final and s.final is None) or (lower and (s.lower is None or s.lower_layer != lower))]
    missing.sort(key=lambda s: len(s.ids))
    for at in tqdm(range(0, len(missing), batch_size), desc="drafter states", unit="batch", disable=not progress or not missing):
        chunk = missing[at : at + batch_size]
        width = max(len(s.ids) for s in chunk)
        ids = torch.stack([torch.cat([s.ids, s.ids.new_zeros(width - len(s.ids))]) for s in chunk]).to(model.device)
        mask = torch.stack([torch.arange(width) < len(s.ids) for s in chunk]).long().to(model.device)
        with layer_inputs(model, [lower] if lower else [], final=final) as states:
            stop = None if final else model.model.layers[lower].register_forward_pre_hook(lambda *args: _stop())  # after the record
            try:
                model(input_ids=ids, attention_mask=mask, use_cache=False)
            except _Enough:
                pass
            finally:
                if stop is not None:
                    stop.remove()
        for row, s in enumerate(chunk):
            if final:
                s.final = states["final"][0][row, : len(s.ids) - 1].cpu().clone()
            if lower:
                s.lower, s.lower_layer = states[lower][0][row, : len(s.ids) - 1].cpu().clone(), lower
    return sequences


def _stop():
    raise _Enough


def frequent_tokens(sequences: list[Sequence], count: int) -> torch.Tensor:
    """The `count` tokens the drafter writes most often in these sequences (the block slots' targets: its greedy
    continuations, or in plain text its greedy choice after each anchor), most frequent first: a read-out shortlist."""
    written = torch.cat([s.ids[s.start + 1 :] if s.greedy is None else s.greedy[s.start :] for s in sequences])
    return torch.bincount(written).argsort(descending=True, stable=True)[:count]
