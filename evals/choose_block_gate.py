"""Should the block drafter propose only what it is sure of? Drafting speed on validation prompts, side by side.

    .venv/bin/python evals/choose_block_gate.py runs/block-drafter [OTHER ...] [--prompts 8] [--max-new-tokens 96] [--gates 0,0.3,0.6] [--block 4] [--systems diffusion,both,both+store]

On prompts no training or report reads (hybrid.drafting.block_recipe.validation_prompts: ACLSum val papers, held-out
plain-English passages), times greedy drafting per prompt, interleaved: plain, lookup, and for each gate (the least
probability a proposal needs; 0 proposes the whole block) the block drafter alone, after lookup (both), and between
lookup and the shipped lookup store (both+store: the store fills the passes neither fills); lookup+store is the default
without a block drafter. Prints each system's speed over plain drafting (total time) and its tokens per verify pass,
float32 on packed weights. `--block`: the most tokens either source proposes a pass (the default `--speculate-block`).
With several block drafters (e.g. one with a read-out shortlist, evals/block_shortlist.py), each system is timed for
each, named after its folder; `--systems` picks which block-drafter systems are timed.
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
    parser.add_argument("block_drafters", nargs="+")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--gates", default="0,0.3,0.6")
    parser.add_argument("--block", type=int, default=DraftConfig().speculate_block)
    parser.add_argument("--systems", default="diffusion,both,both+store")
    args = parser.parse_args()
    drafter = Drafter.from_pretrained()
    block_drafters = {folder: BlockDrafter.load(folder, drafter.model) for folder in args.block_drafters}
    for block_drafter in block_drafters.values():
        drafter.block_drafter = block_drafter
        drafter.pack_weights()  # the block drafter's layers too (the drafter's are packed once)
    gates = [float(g) for g in args.gates.split(",")]
    chosen = args.systems.split(",")
    store = drafter.token_store  # the shipped lookup store
    systems = {"plain": lambda: None, "lookup": lambda: LookupProposals(block=args.block),
               "lookup+store": lambda: LookupProposals(block=args.block, store=store)}
    for (folder, block_drafter), gate in ((pair, gate) for pair in block_drafters.items() for gate in gates):
        named = f"@{gate}" if len(block_drafters) == 1 else f"@{gate} ({folder})"

        def block(block_drafter=block_drafter, gate=gate):
            return BlockProposals(block_drafter, args.block, min_probability=gate)

        kinds = {"diffusion": block, "both": lambda block=block: EitherProposals(LookupProposals(block=args.block), block()),
                 "both+store": lambda block=block: EitherProposals(LookupProposals(block=args.block), block(),
                                                                   LookupProposals(block=args.block, store=store))}
        systems.update({kind + named: kinds[kind] for kind in chosen})
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
