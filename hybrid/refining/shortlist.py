"""Scoring a shortlist of tokens per canvas slot instead of the whole vocabulary.

The refine stage proposes from the product of the drafter's distribution and the refiner's. A token the drafter gives
almost nothing wins that product only where the refiner is overwhelmingly sure of it, and the verify pass then keeps
the change only if the drafter prefers what it makes of the text. So the product can be taken over a shortlist per
slot: the drafter's `size` likeliest tokens there, plus the token the slot held in the draft (the refiner's gain is
measured against it). The refiner's output head then scores (n, size + 1) entries of each step instead of (n, V).

On a list, probabilities are normalised over the list: those of the product given that the token is on it, an upper
bound on the whole vocabulary's by the product mass left off it (7% on average at the first step of the continue
validation split, 64 tokens). So two kinds of slot are scored over the whole vocabulary, in the same pass:
- slots without a drafter distribution (the slack past a text that ended: all-zero prior rows);
- slots whose listed proposal would replace the draft token with at least the guard's confidence (`exact_rows`). Every
  change the guard lets through is then the whole vocabulary's choice at the whole vocabulary's confidence, as without
  a list; a few rows a step, where the head over all slots would be n rows.
Such a row's list becomes the proposal's own `size` likeliest tokens plus its kept token, with exact log-probs. What the
list can still change is the order in which unchanged slots commit, and a change to a token off the list, which it
never proposes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from hybrid.refiner.logprobs import clean_logits, gather_tokens


@dataclass
class Shortlist:
    ids: torch.Tensor  # (B, L, k) candidate tokens of each slot; -1 for none (a repeat), scored -inf
    prior: torch.Tensor  # (B, L, k) the drafter's log-probs of them
    whole: torch.Tensor  # (B, L) slots without a drafter distribution: scored over the whole vocabulary
    size: int  # the proposal's own top tokens listed at a slot scored over the whole vocabulary
    source: torch.Tensor  # (B, L, V) the drafter prior the list was drawn from (zeros where it has none)


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
            return gather_tokens(table, tokens)
        return torch.where(self.ids == tokens[:, None], table, float("-inf")).amax(1)


def build_shortlist(prior: torch.Tensor, size: int, keep: torch.Tensor | None = None) -> Shortlist:
    """The shortlist of every slot of a (B, L, V) drafter prior (all-zero rows: no distribution there): its `size`
    likeliest tokens, and `keep` (B, L) where given (>= 0) and not among them."""
    top = prior.topk(min(size, prior.shape[-1]), dim=-1)
    ids, values = _with_kept(top.indices, keep), top.values
    if keep is not None:
        values = torch.cat([values, prior.gather(-1, keep.clamp(min=0)[..., None])], dim=-1)
    return Shortlist(ids, values, (prior == 0).all(-1), size, prior)


def exact_rows(shortlist: Shortlist, need: torch.Tensor, weight: float, keep: torch.Tensor | None, guard: float, mask_id: int):
    """The rule `listed_logits` applies to the listed logits (n, k) of the `need` slots: (n,) rows to score over the whole
    vocabulary, those without a drafter distribution and (with a guard > 0 and kept tokens) those whose listed
    proposal replaces its kept token with at least the guard's confidence."""
    whole = shortlist.whole[need]
    if keep is None or guard <= 0:
        return lambda listed: whole
    ids, kept = shortlist.ids[need], keep[need]

    def rule(listed: torch.Tensor) -> torch.Tensor:
        confidence, column = _product_logp(shortlist.prior[need], weight, _masked(listed, ids, mask_id)).max(-1)
        return whole | ((kept >= 0) & (ids.gather(1, column[:, None]).squeeze(1) != kept) & (confidence.exp() >= guard))

    return rule


def shortlist_scores(listed: torch.Tensor, full: torch.Tensor, whole: torch.Tensor, shortlist: Shortlist, need: torch.Tensor,
                     weight: float, keep: torch.Tensor | None, mask_id: int) -> Scored:
    """The step's Scored rows from the refiner's logits of the listed tokens (n, k) and the whole vocabulary's at the
    `whole` rows (m, V), in order; `keep` (B, L) the token each slot's gain is measured against (listed at every row)."""
    ids = shortlist.ids[need].clone()
    listed = _masked(listed, ids, mask_id)
    logp = _product_logp(shortlist.prior[need], weight, listed)
    if whole.any():  # the proposal's own top tokens there, with the whole vocabulary's log-probs
        full = clean_logits(full, mask_id)
        full_logp = _product_logp(shortlist.source[need][whole], weight, full)
        top = full_logp.topk(min(shortlist.size, full.shape[-1]), dim=-1).indices
        top = _with_kept(top, keep[need][whole] if keep is not None else None)
        top = torch.cat([top, top.new_full((top.shape[0], max(ids.shape[1] - top.shape[1], 0)), -1)], 1)[:, : ids.shape[1]]
        safe = top.clamp(min=0)
        ids[whole] = top
        listed[whole] = full.gather(1, safe).masked_fill(top < 0, float("-inf"))
        logp[whole] = full_logp.gather(1, safe).masked_fill(top < 0, float("-inf"))
    return Scored(listed, logp, ids)


def _masked(listed: torch.Tensor, ids: torch.Tensor, mask_id: int) -> torch.Tensor:
    """Float `listed` logits (n, k) with the entries of no token (-1) and of the mask token made impossible."""
    return listed.float().masked_fill((ids < 0) | (ids == mask_id), float("-inf"))


def _product_logp(prior: torch.Tensor, weight: float, logits: torch.Tensor) -> torch.Tensor:
    """The proposal's log-probs over the last axis: log_softmax(prior + weight x logits), impossible where the logits
    are (weight 0 would leave 0 x -inf there)."""
    return torch.where(logits > float("-inf"), prior + weight * logits, float("-inf")).log_softmax(-1)


def _with_kept(ids: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """`ids` (..., k) and one more column: the `keep` token (...) where it is given (>= 0) and not listed yet, else -1."""
    if keep is None:
        return ids
    extra = keep.clamp(min=0)[..., None]
    return torch.cat([ids, extra.masked_fill((keep < 0)[..., None] | (ids == extra).any(-1, keepdim=True), -1)], dim=-1)
