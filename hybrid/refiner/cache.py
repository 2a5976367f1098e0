"""What the refiner keeps between the passes of one request, and the two ways it reuses it.

- Exact: with causal lower layers (bidirectional_layers > 0), a slot's lower states depend only on the prompt and on
  what the slots up to it showed, so a pass reruns the lower layers only from the first slot that shows another token
  than before (`LowerStates`), and only in the rows where something changed.
- Approximate (`cache_refresh` N > 1, the dual cache of Fast-dLLM): between full passes, recompute only the positions
  whose outputs are needed and take the other canvas keys/values from earlier passes.

`CanvasCacheMixin` gives the Refiner (hybrid.refiner.model) these passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from transformers.models.llama.modeling_llama import LlamaAttention, apply_rotary_pos_emb

from hybrid.refiner.masks import attention_mask
from hybrid.refiner.row_passes import cache_for_pass, pass_groups

# Attention whose keys and values are k_proj / v_proj of the normed input with rotary positions, and nothing else
# (no key norm, no sliding window): `_last_layer_at` can compute them itself for the rows it does not run.
_SPLITTABLE = (LlamaAttention,)


@dataclass
class PromptState:
    """The prompt encoded once per request: its key/value cache, mask, positions and the logits of its last position."""

    cache: object
    attention_mask: torch.Tensor  # (B, P)
    next_position: torch.Tensor  # (B, 1): position id of canvas slot 0
    last_logits: torch.Tensor  # (B, V): predicts canvas slot 0 (the AR shift)
    shown: torch.Tensor | None = None  # (B, L) with renoised_input "draft": the draft token under each mask (-1: none)
    canvas_keys: list | None = None  # per layer (B, H, L, D): the canvas keys of the last pass (approximate reuse)
    canvas_values: list | None = None
    passes_since_refresh: int = 0
    lower: "LowerStates | None" = None  # exact reuse of the causal lower layers between passes (Refiner.reuse_lower)


@dataclass
class LowerStates:
    """What the causal, LoRA-free lower layers computed for a canvas: a slot's lower states depend only on the prompt
    and on what the slots up to it showed, so a pass recomputes them only from the first slot that shows another
    token than before (exact, not an approximation)."""

    inputs: torch.Tensor  # (B, L) what each slot showed the lower layers: a token id, or the mask id
    keys: list  # per lower layer (B, H, L, D)
    values: list
    hidden: torch.Tensor  # (B, L, E) the lower stack's output, before the mask marker
    recomputed: int = 0  # canvas positions the last pass ran through the lower layers
    taps: dict = field(default_factory=dict)  # lower layer index -> (B, L, E) its output, for the detection layers among them


class CanvasCacheMixin:
    """The Refiner's passes that reuse earlier work (see the module docstring)."""

    @property
    def reuses_lower(self) -> bool:
        """Whether passes share the causal lower layers' states (exact reuse on, a causal lower stack, no approximate cache)."""
        return self.reuse_lower and self.first_bidirectional > 0 and self.cache_refresh <= 1

    def lower_layers_to_record(self) -> tuple[int, tuple[int, ...]] | None:
        """What drafting should keep for `adopt_lower` (Drafter.generate's `record`): the lower layers' keys and values,
        the lower stack's output and the detection taps among the lower layers; None when passes share no lower states."""
        if not self.reuses_lower:
            return None
        last = self.first_bidirectional - 1
        return self.first_bidirectional, tuple(sorted({last} | {i for i in self.config.detection_layers if i < last}))

    def prompt_from_lower(self, prompt_attention_mask: torch.Tensor, drafted) -> PromptState:
        """`encode_prompt` on the lower layers' prompt states from drafting (`drafted`: hybrid.drafting.layer_states.LayerStates): their
        keys and values fill the cache and the last one's output enters the top layers, which alone run over the prompt.
        The same states as the full prompt pass (the lower layers are the drafter's); the top layers' attention runs on
        an explicit mask, so the result matches it to float rounding."""
        from transformers import DynamicCache

        inner = self.model.get_base_model().model
        cache = DynamicCache(config=self.model.config)
        for index in range(self.first_bidirectional):
            cache.update(drafted.prompt_keys[index], drafted.prompt_values[index], index)
        length = prompt_attention_mask.shape[1]
        device = prompt_attention_mask.device
        positions = (prompt_attention_mask.cumsum(-1) - 1).clamp(min=0)
        queries = torch.arange(-length, 0, device=device)
        # causal over the prompt; a padding query also sees itself, so that no row of the mask is empty
        mask = attention_mask(prompt_attention_mask, queries, queries[:0], both_ways=False) | torch.eye(length, dtype=torch.bool, device=device)
        hidden = drafted.prompt_hidden
        rotary = inner.rotary_emb(hidden, position_ids=positions)
        for index in range(self.first_bidirectional, inner.config.num_hidden_layers):
            hidden = inner.layers[index](hidden, attention_mask=mask, position_embeddings=rotary, position_ids=positions, use_cache=True,
                                         **{self._layer_cache_keyword: cache})
        last = self.model.get_base_model().lm_head(inner.norm(hidden[:, -1])).float()
        return PromptState(cache, prompt_attention_mask, positions[:, -1:] + 1, last)

    def adopt_lower(self, state: PromptState, drafted) -> None:
        """Start state.lower from what drafting computed (`drafted`: hybrid.drafting.layer_states.LayerStates): the lower layers are the
        drafter's own (causal, LoRA-free), so over the draft they computed what a refiner pass would; the passes then
        rerun them only from the first slot whose input differs from what drafting fed (its last token, the slack)."""
        taps = {i: drafted.outputs[i] for i in self.config.detection_layers if i < self.first_bidirectional}
        state.lower = LowerStates(drafted.inputs, drafted.keys, drafted.values, drafted.outputs[self.first_bidirectional - 1], 0, taps)

    def prepare_lower(self, state: PromptState | None, canvas: torch.Tensor) -> None:
        """Run the lower layers over `canvas` now, when passes share them: a later pass over it, or over a prefix of it,
        then reruns nothing. The pipeline runs the draft with its slack (hybrid.refining.canvas.with_slack) before the scoring
        pass over the draft alone, so that pass and the first refine pass share one lower run."""
        if state is not None and self.reuses_lower:
            self._lower_states(state, canvas)

    def lower_output(self, state: PromptState | None, canvas: torch.Tensor, stop: int | None = None) -> tuple[int, torch.Tensor] | None:
        """(n, hidden): the output of the lower n layers at slots 0 .. stop - 1 of `canvas` (B, stop, E; default every
        slot), brought up to it from the last pass (rerun from each row's first changed slot, up to `stop` only), for the
        drafter's verify pass to start at layer n (hybrid.refining.verify.DrafterScorer.token_logprobs): the lower layers are the
        drafter's own. None when passes share no lower states, or when the canvas still shows a mask (the lower layers
        saw the draft token there, not the mask)."""
        if state is None or state.lower is None or not self.reuses_lower or bool((canvas == self.mask_token_id).any()):
            return None
        return self.first_bidirectional, self._lower_states(state, canvas[:, :stop]).hidden

    def _reusing_lower(self, state: PromptState, canvas: torch.Tensor, taps: dict | None = None, rows: torch.Tensor | None = None) -> torch.Tensor:
        """`_backbone` over the whole canvas, with the lower layers rerun only from the first slot whose input changed
        since the last pass (state.lower); the top layers always see the whole canvas. Same result, to float rounding.
        With `taps` (a dict), the outputs of the detection layers are stored there by layer index, as `_layers` does;
        with `rows`, only those positions' outputs are computed (`_top_layers`)."""
        every = torch.arange(canvas.shape[1], device=canvas.device)
        lower = self._lower_states(state, canvas)
        hidden = lower.hidden
        if taps is not None:
            taps.update(lower.taps)
        is_mask = canvas == self.mask_token_id
        if self.mask_marker is not None:
            hidden = hidden + is_mask[..., None].to(hidden.dtype) * self.mask_marker.to(hidden.dtype)
        both_ways = attention_mask(state.attention_mask, every, every, both_ways=True)
        return self._top_layers(state.cache, hidden, state.next_position, both_ways, taps, rows)

    def _lower_states(self, state: PromptState, canvas: torch.Tensor) -> LowerStates:
        """state.lower brought up to `canvas`: in each row, the lower layers rerun from the first slot whose input
        changed there; rows that changed nowhere are not run."""
        length = canvas.shape[1]
        is_mask = canvas == self.mask_token_id
        shown = None if state.shown is None else state.shown[:, :length]  # a shorter canvas is the first slots of the refined one
        inputs = canvas if shown is None else torch.where(is_mask & (shown >= 0), shown, canvas)
        lower = state.lower
        if lower is not None and lower.inputs.shape[0] != inputs.shape[0]:
            lower = None
        if lower is None:
            keys, values, hidden, taps = self._run_lower(state, inputs, torch.arange(inputs.shape[0], device=canvas.device), 0)
            state.lower = LowerStates(inputs.clone(), keys, values, hidden, inputs.numel(), taps)
            return state.lower
        # The canvas the states hold, a longer one that begins like it (the draft, then draft + slack) or a shorter one (the
        # draft before its slack, the span a verify pass reads): the lower layers are causal, so the first slots' states
        # serve as they are, and a row reruns from its first change.
        held = lower.inputs.shape[1]
        known = min(held, length)
        changed = torch.cat([lower.inputs[:, :known] != inputs[:, :known], torch.ones_like(inputs[:, known:], dtype=torch.bool)], dim=1)
        starts = torch.where(changed.any(1), changed.int().argmax(1), length).tolist()
        if min(starts) == length and held == length:
            lower.recomputed = 0
            return lower
        if min(starts) == length:  # a prefix of what the states hold: its states are views of theirs, which stay
            cut = lambda t: t[..., :length, :]
            return LowerStates(inputs, [cut(k) for k in lower.keys], [cut(v) for v in lower.values], cut(lower.hidden), 0,
                               {index: cut(tap) for index, tap in lower.taps.items()})
        # new tensors, the slot axis (-2) fitted to the canvas: the old ones may be drafting's own (a draft may be refined again)
        fit = lambda t: t[..., :length, :].clone() if held >= length else torch.cat([t, t.new_zeros(*t.shape[:-2], length - held, t.shape[-1])], dim=-2)
        keys, values = [fit(k) for k in lower.keys], [fit(v) for v in lower.values]
        hidden, taps = fit(lower.hidden), {index: fit(tap) for index, tap in lower.taps.items()}
        recomputed = 0
        for start, group in pass_groups(starts, length):
            rows = torch.tensor(group, device=canvas.device)
            run_keys, run_values, run_hidden, run_taps = self._run_lower(state, inputs, rows, start, lower)
            for ours, theirs in zip(keys + values, run_keys + run_values):
                ours[rows, :, start:] = theirs
            hidden[rows, start:] = run_hidden
            for index, tap in run_taps.items():
                taps[index][rows, start:] = tap
            recomputed += len(group) * (length - start)
        state.lower = LowerStates(inputs.clone(), keys, values, hidden, recomputed, taps)
        return state.lower

    def _run_lower(self, state: PromptState, inputs: torch.Tensor, rows: torch.Tensor, start: int,
                   lower: LowerStates | None = None) -> tuple[list, list, torch.Tensor, dict]:
        """The lower layers over slots start.. of the rows `rows` (what `inputs` shows there), on the prompt's cache and,
        before `start`, the keys and values in `lower`: per layer the keys and values of those slots (r, H, L - start, D),
        the stack's output (r, L - start, E) and the detection taps among the lower layers."""
        length = inputs.shape[1]
        device = inputs.device
        inner = self.model.get_base_model().model
        before = (None, None) if lower is None else (lower.keys, lower.values)
        cache = cache_for_pass(state.cache, rows, start, *before, self.first_bidirectional, self.model.config)
        positions = state.next_position[rows] + torch.arange(start, length, device=device)
        causal = attention_mask(state.attention_mask[rows], torch.arange(start, length, device=device), torch.arange(length, device=device),
                                both_ways=False)
        suffix = self._embed(inputs[rows, start:])
        rotary = inner.rotary_emb(suffix, position_ids=positions)
        skip = state.cache.layers[0].keys.shape[2] + start
        keys, values, taps = [], [], {}
        for index in range(self.first_bidirectional):
            suffix = inner.layers[index](suffix, attention_mask=causal, position_embeddings=rotary, position_ids=positions,
                                         use_cache=True, **{self._layer_cache_keyword: cache})
            keys.append(cache.layers[index].keys[:, :, skip:])
            values.append(cache.layers[index].values[:, :, skip:])
            if index in self.config.detection_layers:
                taps[index] = suffix
        return keys, values, suffix, taps

    def _top_layers(self, cache, hidden: torch.Tensor, next_position: torch.Tensor, mask: torch.Tensor, taps: dict | None = None,
                    rows: torch.Tensor | None = None) -> torch.Tensor:
        """The layers from first_bidirectional up over the whole canvas under `mask`, on the prompt held in `cache`
        (the canvas entries are dropped from it again afterwards); `taps` as in `_reusing_lower`. `rows` (L,) bool: the
        positions whose output is read; the last layer then runs on those alone (`_last_layer_at`), and the other rows of
        the result are zeros."""
        inner = self.model.get_base_model().model
        positions = next_position + torch.arange(hidden.shape[1], device=hidden.device)
        rotary = inner.rotary_emb(hidden, position_ids=positions)
        last = inner.config.num_hidden_layers - 1
        split = (rows is not None and not bool(rows.all()) and isinstance(inner.layers[last].self_attn, _SPLITTABLE)
                 and not (taps is not None and last in self.config.detection_layers))
        for index in range(self.first_bidirectional, last + (not split)):
            prompt_len = cache.layers[index].keys.shape[2]
            hidden = inner.layers[index](hidden, attention_mask=mask, position_embeddings=rotary, position_ids=positions,
                                         use_cache=True, **{self._layer_cache_keyword: cache})
            cached = cache.layers[index]
            cached.keys, cached.values = cached.keys[:, :, :prompt_len], cached.values[:, :, :prompt_len]
            if taps is not None and index in self.config.detection_layers:
                taps[index] = hidden
        if split:
            hidden = _last_layer_at(inner.layers[last], self._layer_cache_keyword, cache, hidden, rows, positions, rotary, mask)
        return inner.norm(hidden)

    def _partial_canvas_logits(self, state: PromptState, canvas: torch.Tensor, need: torch.Tensor, packed: bool = False,
                               listed=None) -> torch.Tensor:
        """Recompute only the positions whose outputs are needed; the rest of the canvas comes from earlier passes."""
        length = canvas.shape[1]
        prompt_len = state.attention_mask.shape[1]
        positions = need[:, 1:].any(0).nonzero().flatten()  # slot i is predicted at canvas position i - 1
        if positions.numel() == 0:  # only slot 0 is needed: the prompt already predicted it
            return self._head(state, state.last_logits[:, None, :0], positions + 1, need, length, packed, listed)
        kept = torch.ones(length, dtype=torch.bool, device=canvas.device)
        kept[positions] = False
        layers = state.cache.layers
        for layer, keys, values in zip(layers, state.canvas_keys, state.canvas_values):
            layer.keys = torch.cat([layer.keys, keys[:, :, kept]], dim=2)
            layer.values = torch.cat([layer.values, values[:, :, kept]], dim=2)
        hidden = self._backbone(state, canvas, positions, torch.cat([kept.nonzero().flatten(), positions]))
        for layer, keys, values in zip(layers, state.canvas_keys, state.canvas_values):
            keys[:, :, positions] = layer.keys[:, :, -len(positions):]  # the recomputed entries are fresh: keep them
            values[:, :, positions] = layer.values[:, :, -len(positions):]
            layer.keys, layer.values = layer.keys[:, :, :prompt_len], layer.values[:, :, :prompt_len]
        state.passes_since_refresh += 1
        return self._head(state, hidden, positions + 1, need, length, packed, listed)


def read_positions(need: torch.Tensor) -> torch.Tensor:
    """(L,) bool: the canvas positions whose output a pass reads for the needed slots `need` (B, L) (position i - 1
    predicts slot i; the last position predicts nothing on the canvas)."""
    rows = torch.zeros(need.shape[1], dtype=torch.bool, device=need.device)
    rows[:-1] = need[:, 1:].any(0)
    return rows


def _last_layer_at(layer, cache_keyword: str, cache, hidden: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor,
                   rotary: tuple, mask: torch.Tensor) -> torch.Tensor:
    """The last decoder layer's output at the positions `rows` only (zeros elsewhere), exactly as the whole layer gives it
    there: every position's key and value still enter its attention (computed here for the rows it does not run, as
    the layer would), but the queries, the output projection and the MLP, most of the layer, run on `rows` alone."""
    if not bool(rows.any()):
        return torch.zeros_like(hidden)
    attn = layer.self_attn
    read, rest = rows.nonzero().flatten(), (~rows).nonzero().flatten()
    cos, sin = rotary
    normed = layer.input_layernorm(hidden[:, rest])
    shape = (*normed.shape[:-1], -1, attn.head_dim)
    keys = attn.k_proj(normed).view(shape).transpose(1, 2)
    keys, _ = apply_rotary_pos_emb(keys, keys, cos[:, rest], sin[:, rest])
    values = attn.v_proj(normed).view(shape).transpose(1, 2)
    cached = cache.layers[attn.layer_idx]
    prompt_len = cached.keys.shape[2]
    cached.keys, cached.values = torch.cat([cached.keys, keys], dim=2), torch.cat([cached.values, values], dim=2)
    # The cache now holds prompt, rest, then (once the layer adds them) the read rows: the mask's keys in that order.
    order = torch.cat([torch.arange(prompt_len, device=hidden.device), prompt_len + rest, prompt_len + read])
    out = layer(hidden[:, read], attention_mask=mask[:, :, read][..., order], position_embeddings=(cos[:, read], sin[:, read]),
                position_ids=positions[:, read], use_cache=True, **{cache_keyword: cache})
    cached.keys, cached.values = cached.keys[:, :, :prompt_len], cached.values[:, :, :prompt_len]
    result = torch.zeros_like(hidden)
    result[:, read] = out
    return result
