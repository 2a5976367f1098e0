"""Choosing the drafter's next token, and the rule that accepts or rejects a proposed one.

`choose` is plain decoding's rule (greedy argmax, or a sample at temperature within top-p). `accept` is the same
rule for a token proposed ahead of time (hybrid.drafting.speculative): greedy keeps a proposal exactly when it is the
argmax; sampling keeps it with probability min(1, p / q) and otherwise draws from the residual max(p - q, 0), so the
text follows the drafter's own distribution p whatever the source's q (Leviathan et al., Chen et al. 2023). Both see
the logits after the repetition rules (hybrid.drafting.logit_rules), as plain decoding does.
"""

from __future__ import annotations

import torch

from hybrid.config import DraftConfig


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    drop = cumulative - torch.softmax(sorted_logits, dim=-1) > top_p  # keep the token that crosses top_p
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


def sampling_probabilities(logits: torch.Tensor, config: DraftConfig) -> torch.Tensor:
    """The distribution a sampling drafter draws from: softmax at temperature, within top-p."""
    return torch.softmax(top_p_filter(logits / config.temperature, config.top_p), dim=-1)


def choose(logits: torch.Tensor, config: DraftConfig, generator) -> torch.Tensor:
    """(B,) the next token of every row from (B, V) logits."""
    if config.temperature == 0.0:
        return logits.argmax(dim=-1)
    return torch.multinomial(sampling_probabilities(logits, config), 1, generator=generator).squeeze(-1)


def accept(logits: torch.Tensor, token: int, config: DraftConfig, generator,
           proposal_probabilities: torch.Tensor | None = None) -> tuple[bool, int | None]:
    """Whether the drafter keeps a proposed `token` given its (V,) logits there, and, when it does not under sampling,
    the token it writes instead (drawn from the residual). Greedy rejects without a replacement: the drafter's argmax
    is then what plain decoding writes, and the loop chooses it as usual. `proposal_probabilities` (V,): the source's
    q; None for a certain guess (q one-hot on `token`)."""
    if config.temperature == 0.0:
        return int(logits.argmax()) == token, None
    p = sampling_probabilities(logits, config)
    q = proposal_probabilities if proposal_probabilities is not None else torch.zeros_like(p).index_fill_(0, torch.tensor([token]), 1.0)
    ratio = p[token] / q[token].clamp_min(torch.finfo(p.dtype).tiny)
    if float(torch.rand((), generator=generator, device=p.device)) < float(ratio):
        return True, None
    residual = (p - q).clamp_min(0.0)
    if float(residual.sum()) <= 0.0:  # p equals q: every draw is accepted, this one by rounding only
        return True, None
    return False, int(torch.multinomial(residual / residual.sum(), 1, generator=generator))
