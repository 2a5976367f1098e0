"""A replaced-token detector on top of the refiner (ELECTRA's discriminator, applied to repairing drafts).

The refiner's probability of a visible token is a weak sign that the token is wrong: the refiner is trained to
*predict* tokens, and a plausible substitute (the kind a drafter makes) often keeps a fair share of probability.
This head is trained for the question itself: from the hidden state of a visible canvas position (which, in the
bidirectional layers, has seen the token and both sides of it) and the refiner's log-probability of that token,
one logistic unit says whether the token is the original one. The loss reaches every visible position, not only
the few that were replaced, so it learns from far fewer examples than the token predictor does.

At initialisation the head outputs the token's log-probability (weight 1 on it, 0 on the hidden state), so a freshly
added head ranks tokens exactly as the token probability does, and training can only move it from there.
"""

from __future__ import annotations

import torch
from torch import nn

HEAD_PREFIX = "detection_head."


class DetectionHead(nn.Module):
    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size + 1, 1)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.weight[0, -1] = 1.0
            self.linear.bias.zero_()

    def forward(self, hidden: torch.Tensor, token_logprob: torch.Tensor) -> torch.Tensor:
        """Keep-logits (B, L): high when the visible token at that position is likely the original one."""
        features = torch.cat([hidden.float(), token_logprob.float()[..., None]], dim=-1)
        return self.linear(features.to(self.linear.weight.dtype)).squeeze(-1).float()

    def tensors(self) -> dict[str, torch.Tensor]:
        return {HEAD_PREFIX + k: v.detach().float().contiguous().cpu() for k, v in self.state_dict().items()}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.load_state_dict({k[len(HEAD_PREFIX):]: v for k, v in tensors.items()})


def split_head_tensors(tensors: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """(detection-head tensors, everything else) of a saved refiner's tensors."""
    head = {k: v for k, v in tensors.items() if k.startswith(HEAD_PREFIX)}
    return head, {k: v for k, v in tensors.items() if not k.startswith(HEAD_PREFIX)}
