"""Log-probabilities of given tokens under a model's logits, shared by the sampler, the verifier and the refiner."""

import torch


def gather_tokens(logp: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(B, L): logp[b, i, tokens[b, i]] of normalised log-probs (B, L, V), ids beyond the vocabulary (the mask) clamped."""
    return logp.gather(-1, tokens.clamp(max=logp.shape[-1] - 1)[..., None]).squeeze(-1)


def token_logprob(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(tokens) under raw `logits` (B, L, V), with ids beyond the vocabulary (the mask) clamped."""
    return gather_tokens(logits.float().log_softmax(-1), tokens)


def clean_logits(logits: torch.Tensor, mask_id: int) -> torch.Tensor:
    """Float logits with the mask token (if inside the vocabulary) made impossible."""
    logits = logits.float()
    if logits.shape[-1] > mask_id:
        logits = logits.index_fill(-1, torch.tensor([mask_id], device=logits.device), float("-inf"))
    return logits
