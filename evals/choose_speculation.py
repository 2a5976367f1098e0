"""Choose the lookup source's settings (block size, shortest n-gram, adaptive block) on validation prompts no report uses.

    python evals/choose_speculation.py --output evals/defaults/speculation-validation.md
    python evals/choose_speculation.py --store checkpoints/lookup-store --store-shortest 1,2,3 --store-blocks 0,1,2,3,4 \
        --output evals/defaults/store-validation.md

Greedy speculation writes exactly the plain greedy draft, so one plain draft per prompt says what every setting would
accept: the lookup source (hybrid.drafting.proposals) is replayed over it pass by pass. What a pass costs is measured
here, per dtype, as a cached forward over k tokens relative to one; a setting's predicted speed over plain drafting is
the draft's tokens over the summed cost of its passes. Prompts: news validation reports and ACLSum validation papers
(copy-heavy), the last continue windows and open questions in no suite (open).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

import torch

from hybrid.config import DraftConfig
from hybrid.drafting.drafter import Drafter
from hybrid.drafting.proposals import LookupProposals
from hybrid.drafting.token_store import resolve_token_store

OPEN_QUESTIONS = ["The history of Rome", "Explain why the sky is blue.", "Write a short story about a lighthouse keeper.",
                  "What are the main causes of inflation?", "Describe how a bicycle works.", "Give three tips for learning a language.",
                  "How do vaccines train the immune system?", "Write a letter to a friend about your summer."]


def validation_prompts(per_group: int) -> dict[str, list[str]]:
    from hybrid.evaluation.harness.suite import load_examples, load_suite
    from hybrid.finetune.data import SUMMARY_TEMPLATE, aclsum_pairs

    root = Path(__file__).resolve().parent
    news = [json.loads(line)["source"] for line in (root / "news/validation.jsonl").read_text().splitlines()]
    suite, base = load_suite("continue")
    half = per_group // 2
    return {
        "copy-heavy": [f"Summarize this report in two sentences.\n\n{s}" for s in news[:half]]
                      + [SUMMARY_TEMPLATE.format(prompt=p.prompt) for p in aclsum_pairs("val")[: per_group - half]],
        "open": [w.prompt for w in load_examples(suite, base)[-half:]] + OPEN_QUESTIONS[: per_group - half],
    }


def pass_costs(model, most: int, repeats: int = 7) -> list[float]:
    """cost[k] = a cached forward over k tokens relative to one, k = 1 .. most (median of `repeats`, after 300 tokens)."""
    from transformers import DynamicCache

    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        model(torch.randint(100, 40000, (1, 300)), cache=cache, use_cache=True)
        medians = []
        for k in range(1, most + 1):
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                model(torch.randint(100, 40000, (1, k)), cache=cache, use_cache=True)
                times.append(time.perf_counter() - start)
                cache.crop(-k)
            medians.append(statistics.median(times))
    return [0.0] + [m / medians[0] for m in medians]


def replay(prompt_ids: list[int], draft: list[int], source: LookupProposals) -> list[int]:
    """The block sizes (tokens fed per pass) greedy speculation with `source` runs to write `draft`."""
    blocks, done = [], 1  # the prefill writes the first token
    while done < len(draft):
        proposal = source.get_candidates(prompt_ids + draft[:done], len(draft) - done).tokens
        accepted = 0
        while accepted < len(proposal) and proposal[accepted] == draft[done + accepted]:
            accepted += 1
        source.update_candidate_strategy(len(proposal), accepted)
        blocks.append(1 + len(proposal))
        done += accepted + 1
    return blocks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-group", type=int, default=12)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--blocks", default="2,4,8,16")
    parser.add_argument("--min-ngrams", default="1,2,3,4")
    parser.add_argument("--max-ngrams", default="3", help="longest n-gram matched first (at least the shortest)")
    parser.add_argument("--wary", default="0", help="1,0: also try needing a longer match after a rejected proposal")
    parser.add_argument("--store", default="none", help="a lookup store folder (hybrid.drafting.token_store) the lookup also reads, "
                        "or none")
    parser.add_argument("--store-shortest", default="1", help="shortest n-grams looked up in the store (with --store)")
    parser.add_argument("--store-blocks", default="0,2", help="most tokens a stored proposal holds (with --store; 0: the store is "
                        "not read, the baseline in the same run)")
    parser.add_argument("--output", default="evals/defaults/speculation-validation.md")
    args = parser.parse_args()

    prompts = validation_prompts(args.per_group)
    drafter = Drafter.from_pretrained("smollm2-135m", "float32")
    store = resolve_token_store(args.store, drafter.tokenizer)
    store_shortest = [int(n) for n in args.store_shortest.split(",")] if store is not None else [0]
    store_blocks = [int(n) for n in args.store_blocks.split(",")] if store is not None else [0]
    if 0 in store_blocks:  # the store is not read: one row of each other setting is enough
        store_blocks = [0] + [b for b in store_blocks if b]
    drafts = {group: [(drafter.encode_prompts([p])[0][0].tolist(),
                       drafter.generate(p, DraftConfig(max_new_tokens=args.max_new_tokens, ignore_eos=True, speculate="off")).token_ids[0].tolist())
                      for p in texts] for group, texts in prompts.items()}
    blocks, min_ngrams = [int(b) for b in args.blocks.split(",")], [int(n) for n in args.min_ngrams.split(",")]
    max_ngrams = [int(n) for n in args.max_ngrams.split(",")]
    wary = [w.strip() == "1" for w in args.wary.split(",")]
    costs = {}
    for dtype in args.dtypes.split(","):
        costs[dtype] = pass_costs(Drafter.from_pretrained("smollm2-135m", dtype).model, 2 * max(blocks) + 1)
    lines = ["| group | block | min n-gram | max n-gram | adaptive | wary | store from n | store block | tokens per pass | "
             + " | ".join(f"speed over plain, {d}" for d in costs) + " |", "|---|---|---|---|---|---|---|---|---|" + "---|" * len(costs)]
    results = []
    for group, rows in drafts.items():
        for block, min_ngram, max_ngram, adaptive, careful, shortest, store_block in itertools.product(
                blocks, min_ngrams, max_ngrams, (True, False), wary, store_shortest, store_blocks):
            max_ngram = max(max_ngram, min_ngram)
            if not store_block and shortest != store_shortest[0]:
                continue
            fed = [replay(ids, draft, LookupProposals(block=block, max_ngram=max_ngram, min_ngram=min_ngram, adaptive=adaptive,
                                                      wary=careful, store=store if store_block else None, store_shortest=shortest or 1,
                                                      store_block=store_block or 2))
                   for ids, draft in rows]
            passes = sum(map(len, fed))
            tokens = sum(len(d) - 1 for _, d in rows)
            speed = {d: tokens / sum(c[k] for f in fed for k in f) for d, c in costs.items()}
            results.append({"group": group, "block": block, "min_ngram": min_ngram, "max_ngram": max_ngram, "adaptive": adaptive, "wary": careful,
                            "store_shortest": shortest or None, "store_block": store_block or None, "tokens_per_pass": tokens / passes,
                            "speed_over_plain": speed})
            lines.append(f"| {group} | {block} | {min_ngram} | {max_ngram} | {adaptive} | {careful} | {shortest or '-'} | {store_block or '-'} | "
                         f"{tokens / passes:.2f} | "
                         + " | ".join(f"{s:.3f}" for s in speed.values()) + " |")
    cost_lines = [f"- {d}: " + ", ".join(f"k={k} {c[k]:.2f}" for k in (2, 3, 4, 8, 16, 32) if k < len(c)) for d, c in costs.items()]
    text = "\n".join(lines) + "\n\nA cached pass over k tokens relative to one, measured in the same run:\n" + "\n".join(cost_lines) + "\n"
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"costs": costs, "results": results}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
