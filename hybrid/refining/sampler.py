"""The refiner's denoising loop, independent of any model.

A *canvas* is the text being refined: a LongTensor[B, L] of token ids where `mask_token_id` marks positions the
refiner must fill. The prompt is not on the canvas; the denoiser encodes it once (`encode_prompt`) and every step
asks for `canvas_logits(prompt_state, canvas)`, the distribution of every canvas token given the prompt and the
whole canvas. Each of the K steps runs the model once and commits the most confident masked positions, as many
as the noise schedule allows (the last step commits all that is left).

One loop, three modes:

* draft only:     steps = 0. `refine` returns the canvas unchanged (the pipeline uses the draft as is and
                  should not call `hybrid.refining.canvas.build_canvas`, which would put masks on it).
* diffusion only: a canvas of masks only (strength 1 and no draft, or simply `torch.full(..., mask_id)`).
* hybrid:         `hybrid.refining.canvas.build_canvas` re-masks a fraction `strength` of the draft (plus `slack` positions after it
                  so the text can grow) and `refine` denoises it.

Editing (`edit_threshold` set), in the spirit of LLaDA 2.1's draft-and-edit and ReMDM's remasking: after
committing at step k, a visible token that was visible before the step is re-masked when the refiner gives its
current token probability < edit_threshold AND the refiner's argmax is a different token. A re-masked token is
committed again at the next step (the schedule's "still masked" target does not grow, so it absorbs it), so
nothing is re-masked at the final step and every mask is filled after K steps. Editing therefore needs K >= 2.

The loop stops early when the canvas holds no mask and a step changed nothing (with editing off: as soon as no
mask is left). With temperature 0 rows are independent: a batch gives exactly the one-by-one results.
"""

import logging
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional, Protocol

import torch

from hybrid.config import SamplerConfig
from hybrid.errors import HybridError
from hybrid.refiner.logprobs import gather_tokens
from hybrid.refining.proposal_scores import restricted_to, step_scores
from hybrid.refining.schedule import get_schedule
from hybrid.refining.shortlist import build_shortlist

logger = logging.getLogger(__name__)


class Denoiser(Protocol):
    """What `refine` needs from a model (see the module docstring)."""

    mask_token_id: int

    def encode_prompt(self, prompt_ids: torch.LongTensor, prompt_attention_mask: torch.LongTensor) -> object:
        """Encode the prompt once per request (e.g. a prefix KV cache); the result is opaque to the sampler."""
        ...

    def canvas_logits(self, prompt_state: object, canvas_ids: torch.LongTensor, need: Optional[torch.BoolTensor] = None) -> torch.FloatTensor:
        """FloatTensor[B, L, V]: logits[b, i] is the distribution of canvas token i given prompt and whole canvas.

        `need` [B, L], when given, marks the slots the sampler will read; a denoiser may skip the output head
        elsewhere (those rows then hold any finite value) to save time. A denoiser may also offer
        `needed_logits(prompt_state, canvas_ids, need)`: the `need` rows alone, (n, V) in row-major order, equal to
        ``canvas_logits(...)[need]``; the sampler then calls it instead.
        """
        ...


class TraceEntry(NamedTuple):
    position: int
    old_token_id: int  # mask id for a commit
    new_token_id: int  # mask id for an edit (re-mask)
    confidence: float  # p(new token) for a commit, p(old token) for an edit


@dataclass
class SamplerOutput:
    canvas: torch.LongTensor  # final ids [B, L]
    steps_run: int = 0
    committed_per_step: list[int] = field(default_factory=list)  # masked positions filled, summed over the batch
    edits_per_step: list[int] = field(default_factory=list)  # visible tokens re-masked, summed over the batch
    trace: list[list[list[TraceEntry]]] = field(default_factory=list)  # [step][row] -> entries (config.trace)
    # [B, L]: the refiner's log-prob of each committed token minus that of the token it replaced (the anchor, or the
    # end token in the slack), at the step that committed it; 0 elsewhere. The verifier's refiner evidence.
    refiner_gain: Optional[torch.Tensor] = None
    proposals: list = field(default_factory=list)  # hybrid.refining.verify.Proposal, filled by the verifier


def refine(
    denoiser: Denoiser,
    prompt_state: object,
    canvas: torch.LongTensor,
    config: SamplerConfig,
    generator: Optional[torch.Generator] = None,
    editable: Optional[torch.BoolTensor] = None,
    anchor: Optional[torch.LongTensor] = None,
    end_token_id: Optional[int] = None,
    prior: Optional[torch.FloatTensor] = None,
    allowed: Optional[torch.BoolTensor] = None,
    restricted: Optional[torch.BoolTensor] = None,
    on_step: Optional[Callable[[int, torch.Tensor, torch.Tensor], None]] = None,
) -> SamplerOutput:
    """Denoise `canvas` in config.steps steps (see the module docstring). The input tensor is not modified.

    `editable` [B, L] limits which visible positions editing may re-mask (default: all); pass False for batch
    padding so rows of different lengths behave as if run alone. `anchor` [B, L] holds the draft token of each
    re-noised position (-1 where there is none, as in the slack): with config.min_change_confidence > 0, a commit
    whose confidence (its probability under the proposal) is below it puts the draft token back, and (given
    `end_token_id`) the refiner may not end the text inside the draft: only the drafter's own end and the slack decide
    where a guarded text stops (the same holds with config.verify). `prior` [B, L, V], when given with config.product,
    holds the drafter's log-probs of every canvas slot (zeros where it has none): each step then proposes from
    log_softmax(prior + w log p_refiner), w the denoiser's `residual_weight` (1 when it has none); with
    config.shortlist > 0, over each slot's shortlist (hybrid.refining.shortlist; a denoiser may offer
    `listed_logits(prompt_state, canvas_ids, need, ids, rule)`: the logits of the listed tokens (n, k), the whole
    vocabulary's (m, V) at the rows `rule(listed logits)` marks, and that mark (n,)). `allowed` [B, V] and
    `restricted` [B, L], when given: a restricted slot draws only from its row's allowed tokens (grounded refinement
    refills from the source's tokens; no shortlist then, which might miss every allowed token).
    `on_step(step, canvas, changed)`, when given, is called after every step with its number (from 1), the canvas
    after it and the positions it committed or re-masked [B, L] (read-only views: copy what you keep).
    The caller validates `config`.
    """
    if config.steps is None:
        raise HybridError("the refine config has no step count: set steps, or let the pipeline resolve it (SamplerConfig.resolved)")
    canvas = canvas.clone()
    editable = torch.ones_like(canvas, dtype=torch.bool) if editable is None else editable.to(canvas.device)
    out = SamplerOutput(canvas=canvas, refiner_gain=torch.zeros(canvas.shape, device=canvas.device))
    if config.steps == 0:
        return out
    loop = _loop(denoiser, prompt_state, canvas, config, generator, editable, anchor, end_token_id, prior, allowed, restricted)
    for k in range(config.steps):
        if config.edit_threshold is None and not (canvas == loop.mask_id).any():
            break
        step = denoise_step(loop, canvas, k)
        if step.gain is not None:
            out.refiner_gain = torch.where(step.commit, step.gain, out.refiner_gain)
        out.steps_run += 1
        out.committed_per_step.append(int(step.commit.sum()))
        out.edits_per_step.append(int(step.edit.sum()))
        if config.trace:
            out.trace.append(_trace_step(canvas, step.canvas, step.commit, step.edit, step.confidence, step.current))
        canvas = step.canvas
        if on_step is not None:
            on_step(k + 1, canvas, step.commit | step.edit)
        logger.debug("step %d/%d: committed %d, re-masked %d", k + 1, config.steps, out.committed_per_step[-1], out.edits_per_step[-1])
        if not (canvas == loop.mask_id).any() and not step.commit.any() and not step.edit.any():
            break
    out.canvas = canvas
    return out


@dataclass
class DenoiseLoop:
    """What every step of one `refine` call reads: the model, the settings, and what was worked out once for them."""

    denoiser: Denoiser
    prompt_state: object
    config: SamplerConfig
    generator: Optional[torch.Generator]
    editable: torch.BoolTensor
    anchor: Optional[torch.LongTensor]
    end_token_id: Optional[int]
    prior: Optional[torch.FloatTensor]  # the product's prior (None without config.product)
    allowed: Optional[torch.BoolTensor]
    restricted: Optional[torch.BoolTensor]
    mask_id: int
    weight: float  # the refiner's weight in the product
    old: Optional[torch.LongTensor]  # the token each slot replaces: the anchor, the end token in the slack
    shortlist: object  # hybrid.refining.shortlist.Shortlist or None
    still_masked: torch.Tensor  # [B, K]: masks row b may keep after step k; re-masked tokens are absorbed by the next step


@dataclass
class DenoiseStep:
    """One step's outcome: the canvas after it, the slots it committed and re-masked, the proposal's confidence in
    each committed token, p(the token on each visible slot) where editing or the trace reads it, and the refiner's
    log-prob gain of each committed token over the one it replaced (None without an anchor)."""

    canvas: torch.LongTensor
    commit: torch.BoolTensor
    edit: torch.BoolTensor
    confidence: torch.Tensor
    current: Optional[torch.Tensor]
    gain: Optional[torch.Tensor]


def _loop(denoiser, prompt_state, canvas, config, generator, editable, anchor, end_token_id, prior, allowed, restricted) -> DenoiseLoop:
    old = None
    if anchor is not None:
        old = anchor if end_token_id is None else torch.where(anchor >= 0, anchor, torch.full_like(anchor, end_token_id))
    shortlist = None
    if config.shortlist > 0 and prior is not None and config.product and allowed is None:  # a list may miss every allowed token
        shortlist = build_shortlist(prior, config.shortlist, keep=old)
    schedule = get_schedule(config.schedule)
    initial = (canvas == denoiser.mask_token_id).sum(1).tolist()
    still_masked = torch.tensor([schedule.remaining(n, config.steps)[1:] for n in initial], device=canvas.device)
    return DenoiseLoop(denoiser, prompt_state, config, generator, editable, anchor, end_token_id, prior if config.product else None,
                       allowed, restricted, denoiser.mask_token_id, float(getattr(denoiser, "residual_weight", 1.0)), old, shortlist,
                       still_masked)


def denoise_step(loop: DenoiseLoop, canvas: torch.LongTensor, k: int) -> DenoiseStep:
    """Step k: score the slots that need it, commit the most confident masked ones (as many as the schedule allows),
    guard the draft's tokens, and with editing re-mask the visible tokens the refiner now distrusts."""
    config, mask_id, threshold, anchor = loop.config, loop.mask_id, loop.config.edit_threshold, loop.anchor
    masked = canvas == mask_id
    need = masked | (~masked & loop.editable) if threshold is not None else masked
    # Only the needed slots are read: the vocabulary-wide work runs on those rows alone, (n, V) or (n, k) over a
    # shortlist, and what the step decides comes back to (B, L) (the other slots are never committed, edited or traced).
    scored = step_scores(loop.denoiser, loop.prompt_state, canvas, need, loop.prior, loop.shortlist, loop.weight, loop.old, anchor,
                          config.min_change_confidence, mask_id)
    if loop.allowed is not None:
        scored = restricted_to(scored, loop.allowed[:, None].expand(*need.shape, -1)[need], loop.restricted[need])
    columns, confidence = _predict(scored.logp, masked[need], config.temperature, loop.generator)
    tokens = scored.tokens(columns)
    current = None  # p(the token now on each visible slot): editing and the trace read it
    if threshold is not None or config.trace:
        current = _scatter(need, scored.at(scored.logp, canvas[need]).exp(), 1.0)
    tokens, confidence = _scatter(need, tokens, 0), _scatter(need, confidence, 0.0)
    argmax = tokens  # at visible slots `_predict` takes the argmax (it samples masked ones only)
    commit = _most_confident(confidence, masked, masked.sum(1) - loop.still_masked[:, k])
    if anchor is not None and (config.min_change_confidence > 0 or config.verify):
        keep_draft = (anchor >= 0) & (confidence < config.min_change_confidence)
        if loop.end_token_id is not None:
            keep_draft |= (anchor >= 0) & (tokens == loop.end_token_id)
        tokens = torch.where(keep_draft, anchor, tokens)
    gain = None
    if loop.old is not None:  # the refiner's log-prob gain (its normaliser cancels), none where nothing was replaced
        gain = scored.at(scored.logits, tokens[need]) - scored.at(scored.logits, loop.old[need].clamp(min=0))
        gain = _scatter(need, torch.where(loop.old[need] >= 0, gain, 0.0), 0.0)
    edit = torch.zeros_like(masked)
    if threshold is not None and k < config.steps - 1:
        edit = ~masked & loop.editable & (current < threshold) & (argmax != canvas)
    return DenoiseStep(torch.where(commit, tokens, canvas).masked_fill(edit, mask_id), commit, edit, confidence, current, gain)


def _scatter(rows: torch.Tensor, values: torch.Tensor, fill) -> torch.Tensor:
    """(B, L) from the values of the `rows` slots (in row-major order), `fill` elsewhere."""
    full = torch.full(rows.shape, fill, dtype=values.dtype, device=values.device)
    full[rows] = values
    return full


def _predict(logp, masked, temperature, generator):
    """Column of every row of `logp` (argmax, or sampled at the `masked` rows) and its probability under the proposal."""
    tokens = logp.argmax(-1)
    if temperature > 0 and masked.any():
        probs = (logp[masked] / temperature).softmax(-1)
        where = generator.device if generator is not None else probs.device  # a CPU generator samples on the CPU
        tokens[masked] = torch.multinomial(probs.to(where), 1, generator=generator).squeeze(-1).to(tokens.device)
    return tokens, gather_tokens(logp, tokens).exp()


def _most_confident(confidence, masked, count):
    """Per row, the `count[b]` masked positions with the highest confidence (ties: earlier position first)."""
    order = confidence.masked_fill(~masked, -1.0).argsort(dim=1, descending=True, stable=True)
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(1, order, positions)
    return masked & (rank < count.clamp(min=0).unsqueeze(1))


def _trace_step(before, after, commit, edit, confidence, current) -> list[list[TraceEntry]]:
    score = torch.where(commit, confidence, current)  # p(new) for commits, p(old) for edits
    rows = []
    for b, changed in enumerate(commit | edit):
        positions = changed.nonzero().flatten().tolist()
        rows.append([TraceEntry(i, int(before[b, i]), int(after[b, i]), float(score[b, i])) for i in positions])
    return rows
