"""What one block-drafter pass costs against one decode step of the drafter, and a verify pass over the block.

    .venv/bin/python evals/block_drafter_cost.py runs/block-drafter [--context 300] [--repeats 21] [--plain-weights]

After a context of `--context` tokens in the drafter's cache, times (medians, interleaved): one decode step of the
drafter (1 token), the block drafter's pass proposing k tokens and the drafter's verify pass over [token, k proposals],
for k = 4 (the default `--speculate-block`) and the block drafter's whole block. Prints each in milliseconds and as
decode steps. The block drafter's weights are read from the folder given. Both models run on packed weights, as
pipelines do (hybrid.drafting.packed_weights), unless `--plain-weights`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    from transformers import DynamicCache

    from hybrid.drafting.block_drafter import BlockDrafter
    from hybrid.drafting.packed_weights import pack_linears
    from hybrid.models import DEFAULT_DRAFTER, load_causal_lm

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("block_drafter", help="block drafter folder (or the shipped one's name)")
    parser.add_argument("--context", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--plain-weights", action="store_true", help="nn.Linear instead of packed weights")
    args = parser.parse_args()
    model, _ = load_causal_lm(DEFAULT_DRAFTER)
    block_drafter = BlockDrafter.load(args.block_drafter, model)
    if not args.plain_weights:
        pack_linears(model)
        pack_linears(block_drafter)
    block = block_drafter.config.block
    sizes = sorted({min(4, block), block})
    ids = torch.randint(100, 20000, (1, args.context + block + 1), generator=torch.Generator().manual_seed(0))
    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        model(input_ids=ids[:, : args.context], past_key_values=cache, use_cache=True,
              position_ids=torch.arange(args.context)[None])
        before = block_drafter.latest  # the drafter's states of that pass, which the block reads its last of

        def step(k: int) -> float:
            start = time.perf_counter()
            model(input_ids=ids[:, args.context : args.context + k], past_key_values=cache, use_cache=True,
                  position_ids=torch.arange(args.context, args.context + k)[None])
            seconds = time.perf_counter() - start
            cache.crop(-k)
            return seconds

        def propose(k: int) -> float:
            block_drafter.latest = before  # as after the verify pass that reached the block's start
            start = time.perf_counter()
            proposed = block_drafter.propose(cache, int(ids[0, args.context]), args.context, k)
            seconds = time.perf_counter() - start
            assert len(proposed) == k
            return seconds

        calls = {"decode step (1 token)": lambda: step(1)}
        for k in sizes:
            calls[f"block drafter pass ({k} proposals)"] = lambda k=k: propose(k)
            calls[f"verify pass ({k + 1} tokens)"] = lambda k=k: step(k + 1)
        times = {name: [] for name in calls}
        for _ in range(args.repeats):
            for name, call in calls.items():
                times[name].append(call())
    decode = statistics.median(times["decode step (1 token)"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name}: {median * 1000:.1f} ms = {median / decode:.2f} decode steps")


if __name__ == "__main__":
    main()
