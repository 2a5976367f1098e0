"""What one refine step proposes: the refiner's logits and the proposal's log-probs over the canvas slots that need
them, over the whole vocabulary or each slot's shortlist (hybrid.refining.shortlist), from the refiner alone or the
product with the drafter's prior, and for grounded repair restricted to the source's tokens."""

from __future__ import annotations

import torch

from hybrid.refiner.logprobs import clean_logits
from hybrid.refining.shortlist import Scored, exact_rows, shortlist_scores


def step_scores(denoiser, prompt_state, canvas, need, prior, shortlist, weight, keep, anchor, guard, mask_id) -> Scored:
    """The refiner's logits and the proposal's log-probs of the `need` slots (hybrid.refining.shortlist.Scored): over each
    slot's shortlist where one is given (the whole vocabulary where `hybrid.refining.shortlist.exact_rows` asks for it: slots
    without a prior, and draft tokens the listed proposal would replace with at least the `guard`'s confidence), else
    over the whole vocabulary; from log_softmax(prior + weight x logits) where a `prior` is given (= log_softmax(prior
    + weight x log p_refiner): the refiner's normaliser cancels), from the refiner alone otherwise; the mask token
    impossible in both."""
    if shortlist is not None:
        ids, rule = shortlist.ids[need], exact_rows(shortlist, need, weight, anchor, guard, mask_id)
        if hasattr(denoiser, "listed_logits"):
            listed, full, whole = denoiser.listed_logits(prompt_state, canvas, need, ids, rule)
        else:
            dense = needed_logits(denoiser, prompt_state, canvas, need)
            listed = dense.gather(1, ids.clamp(min=0))
            whole = rule(listed)
            full = dense[whole]
        return shortlist_scores(listed, full, whole, shortlist, need, weight, keep, mask_id)
    logits = clean_logits(needed_logits(denoiser, prompt_state, canvas, need), mask_id)
    if prior is None:
        return Scored(logits, logits.log_softmax(-1))
    logp = prior[need].add_(logits, alpha=weight)  # prior[need] is a copy: summed in place
    if logp.shape[-1] > mask_id:
        logp[:, mask_id] = float("-inf")  # weight 0 would leave 0 x -inf there
    return Scored(logits, logp.log_softmax(-1))


def needed_logits(denoiser, prompt_state, canvas, need):
    """(n, V) the refiner's logits of the `need` slots, in row-major order."""
    if hasattr(denoiser, "needed_logits"):
        return denoiser.needed_logits(prompt_state, canvas, need)
    return denoiser.canvas_logits(prompt_state, canvas, need)[need]


def restricted_to(scored: Scored, allowed: torch.Tensor, restricted: torch.Tensor) -> Scored:
    """`scored` with each `restricted` row (n,) drawing only from its `allowed` tokens (n, V), renormalised."""
    if scored.ids is not None:
        allowed = allowed.gather(1, scored.ids.clamp(min=0)) & (scored.ids >= 0)
    logp = scored.logp.masked_fill(restricted[:, None] & ~allowed[:, : scored.logp.shape[-1]], float("-inf"))
    return scored._replace(logp=logp - logp.logsumexp(-1, keepdim=True))
