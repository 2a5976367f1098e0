"""Rerunning part of a batch from a slot on: which rows go in which pass, and the cache a pass starts from.

The refiner's lower layers (hybrid.refiner.cache) and the drafter's verify pass (hybrid.refining.verify) both recompute, in
some rows, the slots from one on, while the slots before it keep the keys and values an earlier pass left. A pass
over several rows starts at the earliest of their slots, which is exact (a slot recomputed before a row's own start
gives what it held), but it runs slots that need no run; a pass per row runs none, but streams the weights each time.
"""

from __future__ import annotations

import torch

# What one pass costs beyond its rows: about as much as this many (row, slot) pairs. On the 2-core CPU a pass streams
# the weights of the layers it runs once (~35 ms for the shipped refiner's 22 lower layers) and each (row, slot) costs
# ~0.65 ms more (hybrid.refiner.cache's `_run_lower` timed for 1-8 rows and 5-128 slots).
PASS_OVERHEAD = 50


def pass_groups(starts: list[int], length: int, overhead: float = PASS_OVERHEAD) -> list[tuple[int, list[int]]]:
    """The rows to rerun, in passes: (first slot, rows), each row in one pass that starts at or before its own first
    slot `starts[row]` (`length`: nothing to run, in none). Rows sorted by first slot are cut into the runs of least
    total cost, a pass costing `overhead` plus its rows x its slots."""
    order = sorted((start, row) for row, start in enumerate(starts) if start < length)
    best, cut = [0.0] + [float("inf")] * len(order), [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        for begin in range(end):
            cost = best[begin] + overhead + (end - begin) * (length - order[begin][0])
            if cost < best[end]:
                best[end], cut[end] = cost, begin
    groups, end = [], len(order)
    while end > 0:
        begin = cut[end]
        groups.append((order[begin][0], [row for _, row in order[begin:end]]))
        end = begin
    return groups[::-1]


def cache_for_pass(prompt_cache, rows: torch.Tensor, start: int, keys: list | None, values: list | None, layers: int,
                   config=None):
    """A new cache for a pass over slots start.. of the batch rows `rows`: in each of the first `layers` layers, the
    prompt's keys and values (`prompt_cache`) followed by slots 0 .. start - 1 of `keys` / `values` (per layer
    (B, H, L, D), the slots an earlier pass computed)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=config) if config is not None else DynamicCache()
    for index in range(layers):
        prompt = prompt_cache.layers[index]
        before_keys, before_values = prompt.keys[rows], prompt.values[rows]
        if start > 0:
            before_keys = torch.cat([before_keys, keys[index][rows, :, :start]], dim=2)
            before_values = torch.cat([before_values, values[index][rows, :, :start]], dim=2)
        cache.update(before_keys, before_values, index)
    return cache
