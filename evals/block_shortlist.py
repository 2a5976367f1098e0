"""How many tokens should the block drafter's read-out score? Coverage of read-out shortlists on validation drafts.

    .venv/bin/python evals/block_shortlist.py runs/block-drafter-text --distilled runs/block-drafter.distilled.safetensors \
        [--sizes 2048,4096,8192,16384] [--write 8192 --output runs/block-drafter-text-shortlist]

A shortlist holds the tokens the drafter wrote most often in the distilled sequences (their continuations). For each
size: the share of the drafter's own greedy tokens on the validation prompts (hybrid.drafting.block_recipe.
validation_prompts: ACLSum val papers, held-out plain-English passages; 96 tokens each) that it holds: a proposal
outside it cannot be made. With `--write N`, saves the block drafter with the N-token shortlist to `--output`, for
evals/block_drafter_cost.py and evals/choose_block_gate.py.
"""

from __future__ import annotations

import argparse


def main() -> None:
    import torch

    from hybrid.config import DraftConfig
    from hybrid.drafting.block_drafter import BlockDrafter
    from hybrid.drafting.block_recipe import validation_prompts
    from hybrid.drafting.block_sequences import frequent_tokens, load_sequences
    from hybrid.drafting.drafter import Drafter

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("block_drafter")
    parser.add_argument("--distilled", required=True, help="a distilled file of `hybrid finetune recipes/block-drafter.yaml`")
    parser.add_argument("--sizes", default="2048,4096,8192,16384")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--write", type=int, default=0)
    parser.add_argument("--output", default="")
    args = parser.parse_args()
    drafter = Drafter.from_pretrained(pack_weights=False, lookup_store="none")
    order = frequent_tokens(load_sequences(args.distilled), drafter.model.config.vocab_size)
    config = DraftConfig(max_new_tokens=96, ignore_eos=True, speculate="off")
    written = torch.cat([drafter.generate(p, config).token_ids[0] for p in validation_prompts(args.prompts)])
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    print(f"| shortlist | share of {len(written)} validation draft tokens it holds |\n|---|---|")
    for size in [int(s) for s in args.sizes.split(",")]:
        print(f"| {size} | {float((rank[written] < size).float().mean()):.4f} |")
    if args.write:
        block_drafter = BlockDrafter.load(args.block_drafter, drafter.model).set_shortlist(order[: args.write])
        block_drafter.save(args.output or f"{args.block_drafter.rstrip('/')}-shortlist{args.write}")


if __name__ == "__main__":
    main()
