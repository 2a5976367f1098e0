"""The refine stage as four small steps, each taking dataclasses and returning one:

    plan = plan_canvas(request)                   # what is re-noised, the slack, what may change  -> CanvasPlan
    baseline = drafter_baseline(request, plan)    # the drafter's view of the draft                 -> DrafterBaseline
    output = propose(request, plan, baseline)     # the refiner's denoising loop, or source copies  -> SamplerOutput
    refined = verify(request, plan, baseline, output)  # keep what the drafter prefers               -> Refined

`refine_stage(request)` runs them in that order; the pipeline calls it once per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from hybrid.config import SamplerConfig
from hybrid.errors import HybridError
from hybrid.refiner.logprobs import gather_tokens
from hybrid.refining.canvas import build_canvas, score_draft, slack_of, with_slack
from hybrid.refining.grounded import source_restriction, unsupported_in_drafts
from hybrid.refining.grounded_repair import repair_draft
from hybrid.refining.sampler import SamplerOutput, refine
from hybrid.refining.verify import DrafterPrompt, DrafterScorer, verify_changes


@dataclass
class RefineRequest:
    """What the refine stage is given: the refiner, the draft (None: diffusion only, from an all-mask canvas), the
    prompts' ids, the resolved settings, and for grounded repair one source per prompt."""

    refiner: object  # hybrid.refiner.Refiner
    tokenizer: object
    draft: object | None  # hybrid.drafting.drafter.Draft
    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    config: SamplerConfig
    max_new_tokens: int
    end_ids: set[int]
    context_length: int
    generator: torch.Generator | None = None
    sources: list[str] | None = None
    on_step: Callable | None = None

    @property
    def copies_only(self) -> bool:
        """Grounded repair from the source's copies alone: no refiner pass at all."""
        return self.sources is not None and self.config.verify and not self.config.ground_refill

    @property
    def eos(self) -> int:
        return self.tokenizer.eos_token_id


@dataclass
class CanvasPlan:
    """The canvas the refiner starts from, and which of its slots may change."""

    canvas: torch.Tensor  # (B, L) draft tokens, masks where re-noised, masked slack
    state: object | None  # the refiner's prompt state (None when no refiner pass runs)
    editable: torch.Tensor | None = None  # (B, L) each row's own draft and slack (None: diffusion, all of it)
    anchor: torch.Tensor | None = None  # (B, L) the draft token of each slot, -1 past the draft
    kinds_of: list | None = None  # grounded: per row, per draft token, the kind of claim the source does not support
    chosen: torch.Tensor | None = None  # grounded: (B, N) the unsupported draft tokens


@dataclass
class DrafterBaseline:
    """What the drafter says of the draft: the verifier's scorer and prompt, the draft as a canvas, the drafter's
    log-probs of it, and its distribution of every slot (the product's prior, and grounded repair's ranking)."""

    scorer: DrafterScorer
    prompt: DrafterPrompt
    original: torch.Tensor  # (B, L) the draft, end tokens past it
    original_logp: torch.Tensor  # (B, L)
    drafter_prior: torch.Tensor  # (B, L, V)
    prior: torch.Tensor | None  # the product's prior: drafter_prior with the slots past each draft's next one zeroed


@dataclass
class Refined:
    output: SamplerOutput
    final_ids: list[list[int]]  # per row, up to its end


def refine_stage(request: RefineRequest) -> Refined:
    """Plan the canvas, take the drafter's view of the draft, let the refiner propose, verify."""
    draft = request.draft
    if request.sources is not None:  # grounded: re-noise what the source does not support, and nothing when all is supported
        kinds_of, chosen = unsupported_in_drafts(request.tokenizer, draft, request.sources, request.config.ground_kinds)
        if not chosen.any():
            return Refined(SamplerOutput(canvas=draft.token_ids.clone()), [draft.token_ids[row, : n].tolist() for row, n in enumerate(draft.lengths)])
    else:
        kinds_of = chosen = None
    plan = plan_canvas(request, kinds_of, chosen)
    total = request.prompt_ids.shape[1] + plan.canvas.shape[1]
    if total > request.context_length:
        raise HybridError(f"prompt plus canvas is {total} tokens, beyond the model's context of {request.context_length}")
    baseline = drafter_baseline(request, plan) if draft is not None and (request.config.product or request.config.verify) else None
    output = propose(request, plan, baseline)
    if baseline is not None:
        baseline.prior = None  # the product's prior is spent: free it before the verify pass
    return verify(request, plan, baseline, output)


def plan_canvas(request: RefineRequest, kinds_of=None, chosen=None) -> CanvasPlan:
    """Diffusion: all masks. Hybrid: the draft with its least trusted (or unsupported) tokens masked, and slack after
    a draft that may grow."""
    refiner, draft, config = request.refiner, request.draft, request.config
    # the lower layers already ran over the prompt and the draft while drafting: the refiner takes their states
    state = None if request.copies_only else refiner.encode_prompt(request.prompt_ids, request.prompt_mask,
                                                                    draft.lower if draft is not None else None)
    if draft is None:
        canvas = torch.full((request.prompt_ids.shape[0], request.max_new_tokens), refiner.mask_token_id, dtype=torch.long,
                            device=request.prompt_ids.device)
        return CanvasPlan(canvas, state)
    # a verified text keeps the asked length: only a draft that ended may grow, so only it gets slack
    grows = [n < request.max_new_tokens for n in draft.lengths] if config.verify else None
    scores = None
    if config.select == "confidence":
        if refiner.config.renoised_input == "draft":  # the first refine pass shows the lower layers the draft and its slack
            refiner.prepare_lower(state, with_slack(draft.token_ids, draft.lengths, slack_of(config, "confidence"), request.eos,
                                                    refiner.mask_token_id, grows))
        scores = score_draft(refiner, state, draft.token_ids)
    canvas, _ = build_canvas(draft.token_ids, draft.logprobs, draft.lengths, config, request.eos, refiner.mask_token_id,
                             request.generator, scores=scores, chosen=chosen, grows=grows)
    editable, anchor = _editable_and_anchor(canvas, draft, config.slack, grows)
    if refiner.config.renoised_input == "draft" and state is not None:
        state.shown = anchor  # a re-noised slot shows its draft token (marked); the slack shows the mask
    return CanvasPlan(canvas, state, editable, anchor, kinds_of, chosen)


def _editable_and_anchor(canvas: torch.Tensor, draft, slack: int, grows: list[bool] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Only each row's own draft and slack may change (what follows is batch padding); the anchor is each slot's draft
    token, -1 past the draft."""
    slots = torch.arange(canvas.shape[1], device=canvas.device)[None]
    lengths = torch.tensor(draft.lengths, device=canvas.device)
    editable = slots < (lengths + slack)[:, None]
    anchor = torch.full_like(canvas, -1)
    anchor[:, : draft.token_ids.shape[1]] = draft.token_ids
    anchor[slots >= lengths[:, None]] = -1
    if grows is not None:  # nothing past a draft that may not grow is text
        editable &= torch.tensor(grows, device=canvas.device)[:, None] | (anchor >= 0)
    return editable, anchor


def drafter_baseline(request: RefineRequest, plan: CanvasPlan) -> DrafterBaseline:
    """The drafter's log-distribution of every canvas slot given the draft before it, its log-prob of the draft, and
    the product's prior. The drafter knows the slot after each draft (its end, or its next word); later slack slots
    follow a text that ended, so there the refiner proposes alone."""
    draft, refiner = request.draft, request.refiner
    scorer = DrafterScorer(refiner.model, refiner.adapter_disabled)
    prompt = DrafterScorer.prompt_from_draft(draft) or scorer.encode_prompt(request.prompt_ids, request.prompt_mask)
    original = torch.where(plan.anchor >= 0, plan.anchor, torch.full_like(plan.anchor, request.eos))
    prior = _drafter_prior(draft, original, scorer, prompt)
    original_logp = gather_tokens(prior, original)
    beyond = torch.arange(plan.canvas.shape[1], device=plan.canvas.device)[None] > torch.tensor(draft.lengths, device=plan.canvas.device)[:, None]
    # grounded repair ranks the source's copies by the same tensor (slots inside the drafts are untouched)
    product_prior = prior.masked_fill_(beyond[..., None], 0.0) if request.config.product else None
    return DrafterBaseline(scorer, prompt, original, original_logp, prior, product_prior)


def _drafter_prior(draft, original: torch.Tensor, scorer: DrafterScorer, prompt: DrafterPrompt) -> torch.Tensor:
    """(B, L, V): kept from drafting where the draft has it (zeros for the slots drafting never reached), else one
    teacher-forced pass. Always a new tensor (the caller edits it in place; a draft may be refined again)."""
    if draft.distributions is None:
        return scorer.logprobs(prompt, original)
    kept = draft.distributions[:, : original.shape[1]]
    prior = kept.new_zeros(kept.shape[0], original.shape[1], kept.shape[2])
    prior[:, : kept.shape[1]] = kept
    return prior


def propose(request: RefineRequest, plan: CanvasPlan, baseline: DrafterBaseline | None) -> SamplerOutput:
    """The refiner's K denoising steps over the canvas (an unsupported slot refilled from the source's own tokens), or,
    for grounded repair from copies only, the canvas as planned."""
    if request.copies_only:
        return SamplerOutput(canvas=plan.canvas)
    allowed = restricted = None
    if plan.chosen is not None:
        vocab = request.refiner.model.get_output_embeddings().weight.shape[0]
        allowed, restricted = source_restriction(request.tokenizer, request.sources, vocab, plan.chosen, plan.editable)
    return refine(request.refiner, plan.state, plan.canvas, request.config, request.generator, editable=plan.editable,
                  anchor=plan.anchor, end_token_id=request.eos, prior=baseline.prior if baseline is not None else None,
                  allowed=allowed, restricted=restricted, on_step=request.on_step)


def verify(request: RefineRequest, plan: CanvasPlan, baseline: DrafterBaseline | None, output: SamplerOutput) -> Refined:
    """Grounded repair picks among the source's copies; otherwise each group of changes is kept only when the drafter's
    log-likelihood of what it affects rises (hybrid.refining.verify). Without verification the refiner's canvas stands."""
    config, mask_id = request.config, request.refiner.mask_token_id
    if plan.chosen is not None and config.verify:
        final, output.proposals = repair_draft(request.tokenizer, mask_id, request.draft, output.canvas, plan.kinds_of, request.sources,
                                               config, baseline.scorer, baseline.prompt, baseline.original_logp, baseline.drafter_prior)
        return Refined(output, final)
    if config.verify:  # what may not change (masks left, padding, a cut draft's slack) is the draft's again
        output.canvas = torch.where(plan.editable & (output.canvas != mask_id), output.canvas, baseline.original)
        if ((output.canvas != baseline.original) & plan.editable).any():  # nothing changed: nothing to verify
            _verify_changes(request, plan, baseline, output)
    ends = request.end_ids | {mask_id}
    return Refined(output, [_until_end(output.canvas[row].tolist(), ends) for row in range(output.canvas.shape[0])])


def _verify_changes(request: RefineRequest, plan: CanvasPlan, baseline: DrafterBaseline, output: SamplerOutput) -> None:
    config, editable = request.config, plan.editable
    scored = within_window((output.canvas != baseline.original) & editable, config.verify_window)
    # the refiner's lower layers are the drafter's: brought up to the proposal as far as a score reads, they spare the
    # verify pass its lower layers
    stop = int(scored.any(0).nonzero().max()) + 1
    lower = request.refiner.lower_output(plan.state, output.canvas, stop)
    proposed_logp = baseline.scorer.token_logprobs(baseline.prompt, output.canvas, scored, lower=lower)
    # Only what may change is scored: a cut draft's slack (and its end slot, which drafting never scored) is not text.
    original_logp, proposed_logp = baseline.original_logp.masked_fill(~editable, 0.0), proposed_logp.masked_fill(~editable, 0.0)
    output.canvas, output.proposals = verify_changes(
        baseline.original, output.canvas, original_logp, proposed_logp, output.refiner_gain, editable, request.end_ids,
        config.verify_window, config.verify_weight)


def within_window(changed: torch.Tensor, window: int) -> torch.Tensor:
    """(B, L) the slots a verify score can read: each changed slot and the `window` slots after it."""
    scored = changed.clone()
    for shift in range(1, min(window, changed.shape[1] - 1) + 1):
        scored[:, shift:] |= changed[:, :-shift]
    return scored


def _until_end(ids: list[int], ends: set[int]) -> list[int]:
    for i, token in enumerate(ids):
        if token in ends:
            return ids[:i]
    return ids
