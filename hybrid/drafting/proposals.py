"""Proposal sources for speculative drafting: what guesses the tokens the drafter is about to write.

A source follows the shape of Hugging Face's candidate generators: `get_candidates(context, limit)` proposes up to
`limit` tokens that might follow `context` (the prompt and the text so far, the drafter's next token included), and
`update_candidate_strategy(proposed, accepted)` hears how many of them the drafter kept, so that a source can adapt
how many it proposes. The drafter checks every proposal in one pass (hybrid.drafting.speculative), so a wrong guess
costs a little compute and never changes the text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from hybrid.errors import HybridError


@dataclass
class Proposal:
    tokens: list[int]
    # (len(tokens), V) the source's own probabilities of each proposed token's slot, when it samples from one
    # (speculative sampling then accepts with min(1, p / q)); None: the tokens are certain guesses (q is one-hot).
    probabilities: torch.Tensor | None = None


class ProposalSource(Protocol):
    name: str

    def get_candidates(self, context: list[int], limit: int) -> Proposal: ...  # a source with `needs_cache` also gets cache=


    def update_candidate_strategy(self, proposed: int, accepted: int) -> None: ...


class LookupProposals:
    """N-gram lookup (prompt lookup decoding): find the latest earlier place where the context's last n tokens occur
    (n from `max_ngram` down to `min_ngram`) and propose what followed them there. Needs no model and no training; it
    pays where the text copies its prompt or repeats itself.

    With `adaptive`, the block size follows Hugging Face's candidate generators: it grows by 2 after a block accepted
    whole and shrinks by 1 otherwise, between 1 and `max_block`. With a `store` (hybrid.drafting.token_store), a context
    without a match of its own proposes up to `store_block` tokens that followed its last `store_longest` ..
    `store_shortest` tokens in the drafter's stored text."""

    name = "lookup"

    # Chosen on validation prompts (evals/choose_speculation.py -> evals/defaults/speculation-validation.md): in float32
    # on a 2-core AVX2 CPU with packed weights (a pass over 4 tokens costs 1.19 decode steps, over 8 1.51), block 4 from
    # 2-gram matches with a fixed block replayed fastest over plain drafting averaged over both groups: 1.42x on the
    # copy-heavy prompts, 1.21x on the open ones (block 8: 1.37x and 1.20x). The lookup store (hybrid.drafting.token_store):
    # up to 2 tokens after a match of the last 4 .. 1 tokens, chosen on the same prompts (evals/defaults/store-validation.md;
    # docs/RESULTS.md): 1.45x / 1.40x over plain drafting against 1.39x / 1.19x without the store, and the most robust
    # choice when the cost of a pass is measured again (a pass over 2 tokens cost 1.02 to 1.16 decode steps).
    def __init__(self, block: int = 4, max_block: int = 16, max_ngram: int = 3, min_ngram: int = 2, adaptive: bool = False,
                 wary: bool = False, store=None, store_block: int = 2, store_longest: int = 4, store_shortest: int = 1):
        self.block, self.max_block, self.adaptive = block, max(block, max_block), adaptive
        self.store, self.store_block, self.store_longest, self.store_shortest = store, store_block, store_longest, store_shortest
        self.max_ngram, self.min_ngram = max_ngram, min_ngram
        # wary: after a proposal the drafter rejected whole, the next needs a match one token longer (up to max_ngram);
        # an accepted proposal brings the shortest match back to min_ngram
        self.wary, self.shortest = wary, min_ngram

    def get_candidates(self, context: list[int], limit: int) -> Proposal:
        limit = min(limit, self.block)
        if limit <= 0:
            return Proposal([])
        for n in range(min(self.max_ngram, len(context) - 1), self.shortest - 1, -1):
            found = _latest_match(context, n)
            if found is not None:
                return Proposal(context[found + n: found + n + limit])
        if self.store is not None:
            return Proposal(self.store.continuation(context, min(limit, self.store_block), self.store_longest, self.store_shortest))
        return Proposal([])

    def update_candidate_strategy(self, proposed: int, accepted: int) -> None:
        if self.wary and proposed:
            self.shortest = self.min_ngram if accepted else min(self.shortest + 1, self.max_ngram)
        if not self.adaptive or proposed == 0:
            return
        self.block = min(self.block + 2, self.max_block) if accepted == proposed else max(1, self.block - 1)


class EitherProposals:
    """Several sources in turn: per pass, the first that proposes anything (lookup where the text has a match, else the
    block drafter, and optionally a lookup store last)."""

    name = "both"
    needs_cache = True

    def __init__(self, *sources):
        self.sources, self.last = sources, None

    def get_candidates(self, context: list[int], limit: int, cache=None) -> Proposal:
        for source in self.sources:
            proposal = (source.get_candidates(context, limit, cache=cache) if getattr(source, "needs_cache", False)
                        else source.get_candidates(context, limit))
            if proposal.tokens:
                self.last = source
                return proposal
        self.last = None
        return Proposal([])

    def update_candidate_strategy(self, proposed: int, accepted: int) -> None:
        if self.last is not None:
            self.last.update_candidate_strategy(proposed, accepted)


def proposal_source(config, batch: int, model=None, block_drafter=None, store=None):
    """The proposal source a DraftConfig asks for, new for one call (a source adapts within a call), or None: speculation
    off, or a batch (hybrid.drafting.decode_loop decodes batches plainly). "auto" is the one measured best for `model`;
    "diffusion" and "both" need the drafter's block drafter (hybrid.drafting.block_drafter); "lookup" reads the drafter's
    lookup store too, when it has one (hybrid.drafting.token_store)."""
    name = auto_source(model) if config.speculate == "auto" else config.speculate
    if name == "off" or batch != 1:
        return None
    if name == "lookup":
        return LookupProposals(block=config.speculate_block, store=store)
    if block_drafter is None:
        raise HybridError(f"--speculate {name} needs a block drafter: train one with `hybrid finetune recipes/block-drafter.yaml` "
                          "and pass it with --block-drafter FOLDER")
    block = block_drafter.proposals(config.speculate_block)  # hybrid.drafting.block_drafter.BlockProposals
    # both: the block drafter fills the passes where the text has no match (the store, which matches almost always, would
    # leave it none)
    return block if name == "diffusion" else EitherProposals(LookupProposals(block=config.speculate_block), block)


def auto_source(model) -> str:
    """What speculate "auto" means: lookup, except for a bfloat16 model on a CPU that emulates bfloat16 products, where a
    pass over several tokens costs several decode steps (3.6 for 8 tokens) and the drafting bench measured lookup slower
    than plain drafting (0.99 against 1.04 and 0.93 against 0.97 times HF generate's speed; docs/RESULTS.md 2026-12-07)."""
    if model is not None and model.dtype == torch.bfloat16 and model.device.type == "cpu":
        from hybrid.models import native_bf16_cpu

        return "lookup" if native_bf16_cpu() else "off"
    return "lookup"


def _latest_match(context: list[int], n: int) -> int | None:
    """The start of the latest earlier occurrence of the context's last n tokens that has a token after it."""
    key = context[-n:]
    for start in range(len(context) - n - 1, -1, -1):
        if context[start: start + n] == key:
            return start
    return None
