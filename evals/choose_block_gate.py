"""Should the block drafter propose only what it is sure of? Drafting speed on validation prompts, side by side.

    .venv/bin/python evals/choose_block_gate.py runs/block-drafter [--prompts 8] [--max-new-tokens 96] [--gates 0,0.3,0.6] [--block 4]

On prompts no training or report reads (hybrid.drafting.block_recipe.validation_prompts: ACLSum val papers, held-out
plain-English passages), times greedy drafting per prompt, interleaved: plain, lookup, and for each gate (the least
probability a proposal needs; 0 proposes the whole block) the block drafter alone, after lookup (both), and between
lookup and the shipped lookup store (both+store: the store fills the passes neither fills); lookup+store is the default
without a block drafter. Prints each system's speed over plain drafting (total time) and its tokens per verify pass,
float32 on packed weights. `--block`: the most tokens either source proposes a pass (the default `--speculate-block`).
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    from hybrid.config import DraftConfig
    from hybrid.drafting.block_drafter import BlockDrafter, BlockProposals
    from hybrid.drafting.block_recipe import validation_prompts
    from hybrid.drafting.drafter import Drafter
    from hybrid.drafting.proposals import EitherProposals, LookupProposals

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("block_drafter")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--gates", default="0,0.3,0.6")
    parser.add_argument("--block", type=int, default=DraftConfig().speculate_block)
    args = parser.parse_args()
    drafter = Drafter.from_pretrained()
    block_drafter = drafter.block_drafter = BlockDrafter.load(args.block_drafter, drafter.model)
    drafter.pack_weights()  # the block drafter's layers too
    gates = [float(g) for g in args.gates.split(",")]
    store = drafter.token_store  # the shipped lookup store
    systems = {"plain": lambda: None, "lookup": lambda: LookupProposals(block=args.block),
               "lookup+store": lambda: LookupProposals(block=args.block, store=store)}
    for gate in gates:
        systems[f"diffusion@{gate}"] = lambda gate=gate: BlockProposals(block_drafter, args.block, min_probability=gate)
        systems[f"both@{gate}"] = lambda gate=gate: EitherProposals(LookupProposals(block=args.block),
                                                                    BlockProposals(block_drafter, args.block, min_probability=gate))
        systems[f"both+store@{gate}"] = lambda gate=gate: EitherProposals(
            LookupProposals(block=args.block), BlockProposals(block_drafter, args.block, min_probability=gate),
            LookupProposals(block=args.block, store=store))
    seconds, tokens, passes = ({name: 0.0 for name in systems} for _ in range(3))
    config = DraftConfig(max_new_tokens=args.max_new_tokens, ignore_eos=True, speculate="off")
    for prompt in validation_prompts(args.prompts):
        drafter.generate(prompt, config)  # warm-up
        for name, source in systems.items():
            start = time.perf_counter()
            draft = drafter.generate(prompt, config, source=source())
            seconds[name] += time.perf_counter() - start
            tokens[name] += draft.speculation.tokens
            passes[name] += draft.speculation.passes
    print("| system | speed over plain drafting | tokens per verify pass |\n|---|---|---|")
    for name in systems:
        print(f"| {name} | {seconds['plain'] / seconds[name]:.2f} | {tokens[name] / passes[name]:.2f} |")


if __name__ == "__main__":
    main()
