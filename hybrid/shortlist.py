"""Scoring a shortlist of tokens per canvas slot instead of the whole vocabulary.

The refine stage proposes from the product of the drafter's distribution and the refiner's. A token the drafter gives
almost nothing wins that product only where the refiner is overwhelmingly sure of it, and the verify pass then keeps
the change only if the drafter prefers what it makes of the text. So the product can be taken over a shortlist per
slot: the drafter's `size` likeliest tokens there, plus the token the slot held in the draft (the refiner's gain is
measured against it). The refiner's output head then scores (n, size + 1) entries of each step instead of (n, V).

Slots without a drafter distribution (the slack past a text's end, all-zero prior rows) are still scored over the whole
vocabulary; their shortlist is the proposal's own `size` likeliest tokens plus the end token, with the whole
vocabulary's log-probs. On a shortlist of the drafter's, probabilities are normalised over the list: those of the
product given that the token is on it, an upper bound on the whole vocabulary's by the product mass left off it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from hybrid.logprobs import clean_logits


@dataclass
class Shortlist:
    ids: torch.Tensor  # (B, L, k) candidate tokens of each slot; -1 for none (a repeat), scored -inf
    prior: torch.Tensor  # (B, L, k) the drafter's log-probs of them (0 at whole-vocabulary slots)
    whole: torch.Tensor  # (B, L) slots without a drafter distribution: scored over the whole vocabulary
    size: int  # the proposal's own top tokens kept at whole-vocabulary slots


class Scored(NamedTuple):
    """A step's scores of the needed slots (n rows): over the whole vocabulary when `ids` is None, else over each row's
    listed tokens `ids` (n, k), -inf where an id is -1."""

    logits: torch.Tensor  # the refiner's logits
    logp: torch.Tensor  # the proposal's log-probs
    ids: torch.Tensor | None = None

    def tokens(self, columns: torch.Tensor) -> torch.Tensor:
        """(n,) token ids of the given columns (n,)."""
        return columns if self.ids is None else self.ids.gather(1, columns[:, None]).squeeze(1)

    def at(self, table: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(n,) `table` (logits or logp) at each row's token; -inf where a row's list lacks it."""
        if self.ids is None:
            return table.gather(1, tokens.clamp(max=table.shape[1] - 1)[:, None]).squeeze(1)
        return torch.where(self.ids == tokens[:, None], table, float("-inf")).amax(1)


def build_shortlist(prior: torch.Tensor, size: int, keep: torch.Tensor | None = None) -> Shortlist:
    """The shortlist of every slot of a (B, L, V) drafter prior (all-zero rows: no distribution there): its `size`
    likeliest tokens, and `keep` (B, L) where given (>= 0) and not among them."""
    whole = (prior == 0).all(-1)
    top = prior.topk(min(size, prior.shape[-1]), dim=-1)
    ids, values = top.indices, top.values
    if keep is not None:
        extra = keep.clamp(min=0)[..., None]
        repeat = (keep < 0)[..., None] | (ids == extra).any(-1, keepdim=True)
        ids = torch.cat([ids, extra.masked_fill(repeat, -1)], dim=-1)
        values = torch.cat([values, prior.gather(-1, extra)], dim=-1)
    return Shortlist(ids, values, whole, size)


def shortlist_scores(listed: torch.Tensor, full: torch.Tensor, shortlist: Shortlist, need: torch.Tensor, weight: float,
                     keep: torch.Tensor | None, mask_id: int) -> Scored:
    """The step's Scored rows from the refiner's logits of the listed tokens (n, k) and those of the whole-vocabulary
    rows (m, V) (`shortlist.whole[need]`, in order); `keep` (B, L) the token each slot's gain is measured against."""
    ids, prior, whole = shortlist.ids[need].clone(), shortlist.prior[need], shortlist.whole[need]
    listed = listed.float().masked_fill((ids < 0) | (ids == mask_id), float("-inf"))
    logp = torch.where(listed > float("-inf"), prior + weight * listed, float("-inf")).log_softmax(-1)
    if whole.any():  # the proposal is the refiner's alone there: its own top tokens, exact log-probs
        full = clean_logits(full, mask_id)
        full_logp = torch.where(full > float("-inf"), weight * full, float("-inf")).log_softmax(-1)
        top = full_logp.topk(min(shortlist.size, full.shape[-1]), dim=-1).indices
        width = ids.shape[1]
        if keep is not None and width > top.shape[1]:
            extra = keep[need][whole].clamp(min=0)[:, None]
            top = torch.cat([top, extra.masked_fill((keep[need][whole] < 0)[:, None] | (top == extra).any(-1, keepdim=True), -1)], 1)
        top = torch.cat([top, top.new_full((top.shape[0], width - top.shape[1]), -1)], 1)[:, :width]
        safe = top.clamp(min=0)
        ids[whole] = top
        listed[whole] = full.gather(1, safe).masked_fill(top < 0, float("-inf"))
        logp[whole] = full_logp.gather(1, safe).masked_fill(top < 0, float("-inf"))
    return Scored(listed, logp, ids)
