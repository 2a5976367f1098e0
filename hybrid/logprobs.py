"""Log-probabilities of given tokens under a model's logits, shared by the sampler, the verifier and the refiner."""

import torch


def token_logprob(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(tokens) under `logits` (B, L, V), with ids beyond the vocabulary (the mask) clamped."""
    ids = tokens.clamp(max=logits.shape[-1] - 1)
    return logits.float().log_softmax(-1).gather(-1, ids[..., None]).squeeze(-1)
