"""Choose the refine defaults (strength, K, verify weight) on validation splits that no report and no training uses.

* continue-validation: the last windows of the held-out plays (the committed continue report uses the first 24),
  general refiner;
* summarize-validation: ACLSum's validation split ("val"; training uses train, the report test), summarize refiner.

For every setting the same greedy drafts are refined; printed per setting: proposals, kept groups, texts changed, kept
edits toward / away from the reference, reference words put in / taken out, unigram F1 draft -> refined, and the
independent judge's verdict on the changed texts (perplexity lower = better, higher = worse). Run from the root:

    .venv/bin/python evals/choose_defaults.py --output evals/defaults      # ~20 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def splits(continue_size: int, summarize_size: int, general: str = "general", summarize: str = "summarize"):
    from hybrid.evaluation.harness.suite import load_examples, load_suite
    from hybrid.finetune.data import SUMMARY_TEMPLATE, aclsum_pairs

    suite, base = load_suite("continue")
    windows = load_examples(suite, base)[-continue_size:]
    papers = aclsum_pairs("val")[:summarize_size]
    return {
        "continue-validation": (general, [w.prompt for w in windows], [w.reference for w in windows], suite.max_new_tokens),
        "summarize-validation": (summarize, [SUMMARY_TEMPLATE.format(prompt=p.prompt) for p in papers], [p.target for p in papers], 96),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--continue-size", type=int, default=48)
    parser.add_argument("--summarize-size", type=int, default=16)
    parser.add_argument("--strengths", default="0.15,0.3,0.5")
    parser.add_argument("--steps", default="2,8")
    parser.add_argument("--weights", default="0,0.5,1,2")
    parser.add_argument("--guards", default="0", help="min_change_confidence values (a change needs the proposal at least this sure)")
    parser.add_argument("--shortlists", default="0", help="shortlist sizes (0: the product over the whole vocabulary)")
    parser.add_argument("--general-refiner", default="general", help="the refiner of continue-validation (a shipped name or folder)")
    parser.add_argument("--summarize-refiner", default="summarize", help="the refiner of summarize-validation")
    parser.add_argument("--only", default="", help="run one split (continue-validation or summarize-validation)")
    parser.add_argument("--output", type=Path, default=ROOT / "evals" / "defaults")
    parser.add_argument("--name", default="", help="the output files' stem (default: defaults, plus -SPLIT with --only)")
    args = parser.parse_args()

    import torch

    from hybrid.evaluation.metrics.judge import Judge
    from hybrid.finetune.real_drafts import score_refinements
    from hybrid.pipeline import HybridPipeline

    grid = list(itertools.product([float(x) for x in args.strengths.split(",")], [int(x) for x in args.steps.split(",")],
                                  [float(x) for x in args.weights.split(",")], [float(x) for x in args.guards.split(",")],
                                  [int(x) for x in args.shortlists.split(",")]))
    rows, texts = [], {}
    for name, (refiner, prompts, references, max_new_tokens) in splits(args.continue_size, args.summarize_size, args.general_refiner, args.summarize_refiner).items():
        if args.only and name != args.only:
            continue
        pipe = HybridPipeline.from_pretrained(refiner=refiner)
        drafts = [pipe.draft(prompts[i : i + 8], max_new_tokens=max_new_tokens) for i in range(0, len(prompts), 8)]
        for strength, steps, weight, guard, shortlist in grid:
            results = []
            for i, draft in zip(range(0, len(prompts), 8), drafts):
                results += pipe(prompts[i : i + 8], max_new_tokens=max_new_tokens, refine_steps=steps, strength=strength,
                                verify_weight=weight, min_change_confidence=guard, shortlist=shortlist, draft=draft, trace=True,
                                seed=0)
            figures = score_refinements(results, references).to_dict()
            key = _key(name, strength, steps, weight, guard, shortlist)
            texts[key] = [(r.draft_text, r.text) for r in results]
            rows.append({"split": name, "strength": strength, "steps": steps, "verify_weight": weight, "min_change_confidence": guard,
                         "shortlist": shortlist, "refine_s": round(sum(r.timings.refine_s for r in results) / len(results), 2)} | figures)
            print(key, json.dumps(figures), file=sys.stderr, flush=True)
        del pipe
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    judge = Judge()
    for row in rows:
        key = _key(row["split"], row["strength"], row["steps"], row["verify_weight"], row["min_change_confidence"], row["shortlist"])
        pairs = [p for p in texts[key] if p[0] != p[1]]
        before = judge.perplexity([p[0] for p in pairs]) if pairs else []
        after = judge.perplexity([p[1] for p in pairs]) if pairs else []
        row["judge_better"] = sum(a < b for b, a in zip(before, after))
        row["judge_worse"] = sum(a > b for b, a in zip(before, after))
    args.output.mkdir(parents=True, exist_ok=True)
    stem = args.name or ("defaults" + (f"-{args.only}" if args.only else ""))
    (args.output / f"{stem}.json").write_text(json.dumps({"rows": rows, "texts": texts}, indent=1) + "\n")
    header = ("| split | strength | K | verify weight | min change confidence | shortlist | proposals | kept | texts changed | toward / away | ref. words in / out "
              "| unigram F1 draft -> refined | judge better / worse | refine s per batch of 8 |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r['split']} | {r['strength']:g} | {r['steps']} | {r['verify_weight']:g} | {r['min_change_confidence']:g} | {r['shortlist'] or 'all'} | {r['proposals']} | {r['accepted']} "
                     f"| {r['texts_changed']} / {r['drafts']} | {r['toward_reference']} / {r['away_from_reference']} "
                     f"| {r['reference_words_in']} / {r['reference_words_out']} | {r['unigram_f1_draft']:.4f} -> {r['unigram_f1_refined']:.4f} "
                     f"| {r['judge_better']} / {r['judge_worse']} | {r['refine_s']} |")
    (args.output / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _key(split: str, strength: float, steps: int, weight: float, guard: float, shortlist: int = 0) -> str:
    """A setting's key in the texts file; the guard and the shortlist show only where they are on (so older files' keys
    still read)."""
    return f"{split} s{strength:g} K{steps} w{weight:g}" + (f" g{guard:g}" if guard else "") + (f" l{shortlist}" if shortlist else "")


if __name__ == "__main__":
    main()
