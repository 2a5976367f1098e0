"""The refiner's attention masks: one rule for the training pass and for the cached passes alike.

Positions count from canvas slot 0, so the prompt's are -P .. -1. A query sees a key that is not padding and lies
at or before it (causal); under `both_ways`, a canvas query also sees every canvas key after it. The prompt never
sees the canvas. The training pass runs prompt and canvas together (queries -P .. L - 1); a cached pass runs canvas
queries only, against the prompt's cached keys and the canvas keys of the pass.
"""

import torch


def attention_mask(prompt: torch.Tensor, queries: torch.Tensor, keys: torch.Tensor, both_ways: bool) -> torch.Tensor:
    """(B, 1, Q, P + K) bool: what the queries at positions `queries` (Q,) see of the prompt (`prompt` (B, P): True
    where it is not padding) followed by the canvas keys at slots `keys` (K,), in the order the cache holds them."""
    batch, length = prompt.shape
    positions = torch.cat([torch.arange(-length, 0, device=keys.device), keys])
    valid = torch.cat([prompt.bool(), torch.ones(batch, len(keys), dtype=torch.bool, device=prompt.device)], dim=1)
    sees = positions[None, :] <= queries[:, None]
    if both_ways:
        sees = sees | ((queries[:, None] >= 0) & (positions[None, :] >= 0))
    return (sees[None] & valid[:, None, :])[:, None]
