"""Drafter-verified edits: the refiner proposes, the drafter decides.

A greedy draft sits close to the drafter's own optimum, and a refiner that re-predicts a blanked token alone is a
worse predictor than the drafter, so an unchecked refine pass makes drafts worse. Here every change the refine loop
proposes is scored before it is kept:

    score = drafter gain + weight x refiner gain

* drafter gain: the drafter's teacher-forced log-likelihood of the tokens the change affects, minus the same for the
  draft. Changes closer than `window` tokens to each other form one group (they interact), and a group affects its
  changed tokens and the `window` tokens after the last one, up to and including the end token of each version, so
  an appended text pays for its own end token as the draft paid for its own. One parallel drafter pass over the
  proposed canvas gives every group's figure (the draft's comes from the pass that built the proposal prior); it
  runs only from where the proposal departs from the draft, on drafting's own cache before that, to the last slot
  scored (`DrafterScorer.token_logprobs`).
* refiner gain: the refiner's log-prob of each new token minus that of the token it replaces, at the step that
  committed it, summed over the group. At weight 0 nothing the drafter dislikes gets through.

Grounded refinement (`select="unsupported"`) scores its candidates the same way, plus a grounding term
(hybrid.refining.grounded_repair).

A group is kept when its score is above 0; otherwise the draft's tokens come back. This holds for the slack too:
text is appended only when it scores. One pass serves all groups, so a group's figure is taken with the earlier
groups as proposed (kept or not); groups are more than `window` tokens apart, so none scores another's changed tokens.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from hybrid.refiner.logprobs import token_logprob
from hybrid.models import cache_keyword, last_position_logits
from hybrid.refiner.row_passes import cache_for_pass, pass_groups


@dataclass
class Proposal:
    """One group of proposed changes in one row, with its verification."""

    row: int
    start: int  # first changed canvas position
    end: int  # last changed canvas position (inclusive)
    old_ids: list[int]  # the draft's tokens at start..end
    new_ids: list[int]  # the proposal's tokens at start..end
    drafter_gain: float
    refiner_gain: float
    score: float
    accepted: bool
    grounding_gain: float = 0.0  # unsupported tokens the change removed minus those it added (grounded refinement)
    origin: str = "refiner"  # who proposed it: the refiner, or a copy from the source (hybrid.refining.grounded_repair)


@dataclass
class DrafterPrompt:
    cache: object
    attention_mask: torch.Tensor  # (B, P)
    next_position: torch.Tensor  # (B, 1)
    last_logits: torch.Tensor  # (B, V)
    # What drafting fed the model after the prompt (B, M) and every layer's keys and values of those slots (B, H, M, D):
    # a pass over a canvas that begins with the same tokens starts where it departs from them (token_logprobs).
    fed: torch.Tensor | None = None
    fed_keys: list | None = None
    fed_values: list | None = None

    def select(self, rows: torch.Tensor, config) -> "DrafterPrompt":
        """A new prompt state holding rows `rows` of this one (repeats allowed), e.g. one per candidate to score."""
        from transformers import DynamicCache

        cache = DynamicCache(config=config)
        for index, layer in enumerate(self.cache.layers):
            cache.update(layer.keys[rows], layer.values[rows], index)
        fed = None if self.fed is None else self.fed[rows]
        keys = None if self.fed is None else [k[rows] for k in self.fed_keys]
        values = None if self.fed is None else [v[rows] for v in self.fed_values]
        return DrafterPrompt(cache, self.attention_mask[rows], self.next_position[rows], self.last_logits[rows], fed, keys, values)


class DrafterScorer:
    """Teacher-forced log-probs of canvas tokens under the plain causal drafter, its prompt encoded once.

    `model` is any Hugging Face causal LM; `plain` a context in which it runs as the drafter (the refiner's
    `adapter_disabled`, since the refiner shares the drafter's weights)."""

    def __init__(self, model, plain=nullcontext):
        self.model = model
        self.plain = plain
        self._keyword = cache_keyword(model)

    def encode_prompt(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> DrafterPrompt:
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
        with self.plain():
            last = last_position_logits(self.model, cache, input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions)
        return DrafterPrompt(cache, prompt_mask, positions[:, -1:] + 1, last)

    @staticmethod
    def prompt_from_draft(draft) -> DrafterPrompt | None:
        """The prompt state from a draft's own KV cache, so the verifier needs no prefill, with the keys and values of
        the draft slots drafting fed (the draft's cache is left whole: a draft may be refined again); None when the
        draft kept no cache. The prompt's last logits are the first draft step's distribution."""
        from transformers import DynamicCache

        if draft.cache is None or draft.distributions is None:
            return None
        prompt_len = draft.prompt_ids.shape[1]
        cache, layers = DynamicCache(), draft.cache.layers
        for index, layer in enumerate(layers):
            cache.update(layer.keys[:, :, :prompt_len], layer.values[:, :, :prompt_len], index)
        fed = draft.cache.get_seq_length() - prompt_len
        positions = (draft.prompt_attention_mask.cumsum(-1) - 1).clamp(min=0)
        return DrafterPrompt(cache, draft.prompt_attention_mask, positions[:, -1:] + 1, draft.distributions[:, 0],
                             draft.token_ids[:, :fed], [layer.keys[:, :, prompt_len:] for layer in layers],
                             [layer.values[:, :, prompt_len:] for layer in layers])

    def token_logprobs(self, state: DrafterPrompt, canvas: torch.Tensor, need: torch.Tensor,
                       lower: tuple[int, torch.Tensor] | None = None) -> torch.Tensor:
        """(B, L): ``gather_tokens(self.logprobs(state, canvas), canvas)`` at the slots marked in `need` (B, L) and at
        slot 0, which the prompt predicts; zeros elsewhere. For less: a row runs from where its canvas departs from what
        drafting fed (drafting's keys and values serve before that, `state.fed`) to its last needed slot, rows in the
        passes of least cost (hybrid.refiner.row_passes), and the head on the needed positions alone; rows with nothing needed
        after slot 0 do not run.

        `lower` = (n, hidden): what the drafter's first n layers output at every slot of this canvas, (B, L, E), e.g. the
        refiner's causal, LoRA-free lower layers, which are the drafter's own (hybrid.refiner.cache). The pass then runs
        the layers from n up only: the same log-probs, to float rounding."""
        batch, length = canvas.shape
        out = torch.zeros(canvas.shape, device=canvas.device)
        out[:, 0] = token_logprob(state.last_logits, canvas[:, 0])
        wanted = need.clone()
        wanted[:, 0] = False
        slots = torch.arange(length, device=canvas.device)
        last = torch.where(wanted, slots, -1).amax(1)  # each row's last needed slot (-1: none)
        # position j predicts slot j + 1: a row runs positions begin .. last - 1
        begin = torch.zeros(batch, dtype=torch.long, device=canvas.device)
        if state.fed is not None:
            known = min(state.fed.shape[1], length)
            departs = torch.cat([state.fed[:, :known] != canvas[:, :known], torch.ones_like(wanted[:, known:])], dim=1)
            first_needed = torch.where(wanted, slots, length).amin(1)
            begin = torch.minimum(departs.int().argmax(1), first_needed - 1).clamp(min=0)
        stop = int(last.max()) if bool((last > 0).any()) else 0
        begin = torch.where(last > 0, begin, stop)
        for start, group in pass_groups(begin.tolist(), stop):
            rows = torch.tensor(group, device=canvas.device)
            end = int(last[rows].max())
            cache = cache_for_pass(state.cache, rows, start, state.fed_keys, state.fed_values, len(state.cache.layers))
            read = wanted[rows][:, start + 1 : end + 1].any(0).nonzero().flatten()  # positions start + read
            positions = state.next_position[rows] + torch.arange(start, end, device=canvas.device)
            with self.plain():
                if lower is None:
                    mask = torch.cat([state.attention_mask[rows], torch.ones(len(group), end, dtype=state.attention_mask.dtype,
                                                                             device=canvas.device)], dim=1)
                    logits = self.model(input_ids=canvas[rows, start:end], attention_mask=mask, use_cache=True,
                                        position_ids=positions, logits_to_keep=read, **{self._keyword: cache}).logits
                else:
                    logits = self._upper_logits(lower[0], lower[1][rows, start:end], cache, state.attention_mask[rows],
                                                start, end, positions, read)
            scored = start + 1 + read  # slots after 0: still zeros in `out`
            picked = token_logprob(logits, canvas[rows][:, scored])
            out[rows[:, None], scored] = torch.where(wanted[rows][:, scored], picked, 0.0)
        return out

    def _upper_logits(self, first: int, hidden: torch.Tensor, cache, prompt_mask: torch.Tensor, start: int, end: int,
                      positions: torch.Tensor, read: torch.Tensor) -> torch.Tensor:
        """(r, len(read), V) logits at positions start + read from the layers `first` up over slots start .. end - 1,
        `hidden` (r, end - start, E) entering layer `first` there; `cache` holds each layer's prompt and slots before
        `start`. Causal, as the drafter runs: the `attention_mask` rule without its both-ways part."""
        from hybrid.refiner.masks import attention_mask

        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        inner = base.model
        slots = torch.arange(end, device=hidden.device)
        mask = attention_mask(prompt_mask, slots[start:], slots, both_ways=False)
        rotary = inner.rotary_emb(hidden, position_ids=positions)
        for index in range(first, len(inner.layers)):
            hidden = inner.layers[index](hidden, attention_mask=mask, position_embeddings=rotary, position_ids=positions,
                                         use_cache=True, **{self._keyword: cache})
        picked = inner.norm(hidden[:, read])
        # the head on 2-D rows: a 3-D call with one row copies the transposed head weight in bfloat16 on the CPU
        return base.get_output_embeddings()(picked.reshape(-1, picked.shape[-1])).view(*picked.shape[:2], -1)

    def logprobs(self, state: DrafterPrompt, canvas: torch.Tensor) -> torch.Tensor:
        """(B, L, V): [b, i] is the drafter's log-distribution of canvas token i given the prompt and canvas[:i]."""
        batch, length = canvas.shape
        prompt_len = state.attention_mask.shape[1]
        mask = torch.cat([state.attention_mask, torch.ones_like(canvas)], dim=1)
        positions = state.next_position + torch.arange(length, device=canvas.device)
        with self.plain():
            out = self.model(input_ids=canvas, attention_mask=mask, position_ids=positions, use_cache=True,
                             logits_to_keep=length, **{self._keyword: state.cache})
        state.cache.crop(-length)  # keep only the prompt for the next pass
        logits = torch.cat([state.last_logits[:, None], out.logits[:, :-1].float()], dim=1)
        return logits.log_softmax(-1)


def verify_changes(original: torch.Tensor, proposed: torch.Tensor, original_logp: torch.Tensor, proposed_logp: torch.Tensor,
                   refiner_gain: torch.Tensor, editable: torch.Tensor, end_ids: set[int], window: int,
                   weight: float) -> tuple[torch.Tensor, list[Proposal]]:
    """Keep the groups of changes whose score is above 0 (see the module docstring); return (canvas, proposals).

    `original_logp`/`proposed_logp` (B, L): the drafter's log-prob of each version's token; `refiner_gain` (B, L):
    the refiner's log-prob of the proposed token minus that of the original one."""
    final = torch.where(editable, proposed, original)
    changed = (proposed != original) & editable
    proposals = []
    for row in changed.any(1).nonzero().flatten().tolist():
        positions = changed[row].nonzero().flatten().tolist()
        ends = (_first_end(original[row], end_ids), _first_end(proposed[row], end_ids))
        for start, end in _groups(positions, window):
            old_to = min(end + window, _end_after(ends[0], start, original.shape[1]))
            new_to = min(end + window, _end_after(ends[1], start, proposed.shape[1]))
            drafter_gain = float(proposed_logp[row, start : new_to + 1].sum() - original_logp[row, start : old_to + 1].sum())
            group = changed[row, start : end + 1]
            refiner = float((refiner_gain[row, start : end + 1] * group).sum())
            score = drafter_gain + weight * refiner
            accepted = score > 0
            if not accepted:
                final[row, start : end + 1] = original[row, start : end + 1]
            proposals.append(Proposal(row, start, end, original[row, start : end + 1].tolist(), proposed[row, start : end + 1].tolist(),
                                      drafter_gain, refiner, score, accepted))
    return final, proposals


def _groups(positions: list[int], window: int) -> list[tuple[int, int]]:
    """Runs of sorted positions in which each is at most `window` after the previous one, as (first, last)."""
    groups = []
    for position in positions:
        if groups and position - groups[-1][1] <= window:
            groups[-1][1] = position
        else:
            groups.append([position, position])
    return [tuple(g) for g in groups]


def _first_end(tokens: torch.Tensor, end_ids: set[int]) -> list[int]:
    return [i for i, token in enumerate(tokens.tolist()) if token in end_ids]


def _end_after(ends: list[int], start: int, length: int) -> int:
    """The first end token at or after `start` (inclusive), else the last position."""
    return next((i for i in ends if i >= start), length - 1)
