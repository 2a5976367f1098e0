"""The canvas a refine pass starts from: which draft tokens are re-noised, and the slack after the draft.

`build_canvas` turns drafts into canvases (hybrid.refining.sampler.refine denoises them); `score_draft` is the scoring pass
that the `confidence` rule ranks draft tokens by.
"""

from typing import Optional, Sequence, Union

import torch

from hybrid.config import SamplerConfig, default_slack
from hybrid.errors import HybridError
from hybrid.refiner.logprobs import clean_logits, token_logprob
from hybrid.refining.sampler import Denoiser


def num_to_mask(strength: float, length: int) -> int:
    """round(strength * length), halves rounded up."""
    return int(strength * length + 0.5)


def score_draft(denoiser: Denoiser, prompt_state: object, canvas: torch.LongTensor) -> torch.FloatTensor:
    """One scoring pass: how likely each token already on the (unmasked) canvas is right, [B, L].

    A denoiser with a `visible_confidence(prompt_state, canvas)` method (a trained error detector) answers itself;
    otherwise the score is the denoiser's probability of the token.
    """
    own = getattr(denoiser, "visible_confidence", None)
    if own is not None:
        return own(prompt_state, canvas)
    return token_logprob(clean_logits(denoiser.canvas_logits(prompt_state, canvas), denoiser.mask_token_id), canvas).exp()


def build_canvas(
    draft_ids: torch.LongTensor,
    draft_logprobs: Optional[torch.FloatTensor],
    draft_lengths: Union[torch.LongTensor, Sequence[int]],
    config: SamplerConfig,
    eos_id: int,
    mask_id: int,
    generator: Optional[torch.Generator] = None,
    scores: Optional[torch.FloatTensor] = None,
    chosen: Optional[torch.BoolTensor] = None,
    grows: Optional[Sequence[bool]] = None,
) -> tuple[torch.LongTensor, torch.BoolTensor]:
    """Draft [B, L] -> (canvas [B, L + slack], noise_mask [B, L + slack]); L alone where no row may grow.

    Row b keeps its first draft_lengths[b] tokens, re-masks num_to_mask(strength, length_b) of them (lowest
    draft logprob, lowest refiner `scores` or random, per `config.select`, where 'auto' is the scores when given, else
    the log-probs; ties go to the earlier position; with select 'unsupported', exactly the positions marked in `chosen`
    [B, >= L]), and masks the `slack` positions right after its draft (None: hybrid.config.default_slack) where it may
    grow (`grows`, default every row; see `with_slack`). Everything after that is eos_id (batch padding).
    strength 0 is accepted here as an edge case meaning "mask no draft token"; `validate()` rejects it.
    """
    batch, length = draft_ids.shape
    lengths = [int(n) for n in (draft_lengths.tolist() if torch.is_tensor(draft_lengths) else draft_lengths)]
    if len(lengths) != batch or any(not 0 <= n <= length for n in lengths):
        raise ValueError(f"draft_lengths {lengths} do not fit draft_ids of shape {tuple(draft_ids.shape)}")
    select = config.select if config.select != "auto" else ("confidence" if scores is not None else "logprob")
    slack = slack_of(config, select)
    if select == "logprob" and draft_logprobs is None:
        raise HybridError("select='logprob' needs the drafter's token log-probs")
    if select == "confidence" and scores is None:
        raise HybridError("select='confidence' needs refiner scores (see score_draft)")
    if select == "unsupported" and chosen is None:
        raise HybridError("select='unsupported' needs the unsupported draft tokens (see hybrid.refining.grounded)")
    canvas = with_slack(draft_ids, lengths, slack, eos_id, mask_id, grows)
    noise = torch.zeros(canvas.shape, dtype=torch.bool, device=canvas.device)
    for b, n in enumerate(lengths):
        noise[b, n:] = canvas[b, n:] == mask_id  # the slack
        if select == "unsupported":
            noise[b, :n] = chosen[b, :n].to(canvas.device)
        else:
            noise[b, _pick(b, n, select, config.strength, draft_logprobs, scores, generator).to(canvas.device)] = True
    return canvas.masked_fill(noise, mask_id), noise


def slack_of(config: SamplerConfig, select: str) -> int:
    """The masked slots after each draft: config.slack, else the default for the selection rule."""
    return config.slack if config.slack is not None else default_slack(select)


def with_slack(draft_ids: torch.LongTensor, lengths: Sequence[int], slack: int, eos_id: int, mask_id: int,
               grows: Optional[Sequence[bool]] = None) -> torch.LongTensor:
    """[B, L + slack]: each row's draft, `slack` masks right after it, eos_id after that (batch padding). It is the
    canvas `build_canvas` makes before re-noising any draft token, and what a refiner whose re-noised slots show their
    draft token (renoised_input "draft") shows its lower layers on the first refine pass. With `grows` (B,), a row
    that may not grow (a verified draft cut at its token limit) gets no slack, and where no row may grow the canvas is
    [B, L]: slack that can never become text would only cost passes (its slots have no drafter distribution, so the
    whole vocabulary is scored there) and show the refiner masks past a text that goes on."""
    grows = [True] * draft_ids.shape[0] if grows is None else [bool(g) for g in grows]
    canvas = draft_ids.new_full((draft_ids.shape[0], draft_ids.shape[1] + (slack if any(grows) else 0)), eos_id)
    for b, n in enumerate(lengths):
        canvas[b, :n] = draft_ids[b, :n]
        canvas[b, n : n + (slack if grows[b] else 0)] = mask_id
    return canvas


def _pick(b, n, select, strength, draft_logprobs, scores, generator) -> torch.LongTensor:
    """Positions of row b's draft (length n) to re-mask."""
    count = num_to_mask(strength, n)
    if select == "random":
        device = generator.device if generator is not None else "cpu"
        return torch.randperm(n, generator=generator, device=device)[:count]
    values = draft_logprobs if select == "logprob" else scores
    return torch.sort(values[b, :n].float(), stable=True).indices[:count]
