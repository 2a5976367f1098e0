"""Choose the grounded-repair settings (ground weight, source copies per span) on validation prompts no report uses.

* news-validation: the 64 reports of evals/news/validation.jsonl (24 before 2026-12-02's third session; the news
  report uses evals/news/test.jsonl);
* summarize-validation: the first 16 papers of ACLSum's validation split (the summarize report uses test).

The same greedy drafts (summarize refiner) are refined with `select="unsupported"` for every setting; printed per
setting and split (ground weight x source copies per span x whether the refiner's own fill is offered x whether cutting
a span out is offered): texts changed, entity and number precision against the source (micro), ROUGE-L to the
reference, the consistency classifier's mean P(consistent) against the source, and the refine stage's time as a
share of drafting. Run from the repository root:

    .venv/bin/python evals/choose_grounding.py --output evals/defaults/grounding.json    # ~8 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def splits(news_size: int, summarize_size: int):
    from hybrid.evaluation.harness.suite import load_examples, load_suite

    news, base = load_suite("news")
    news.data.path = "../news/validation.jsonl"
    papers, papers_base = load_suite("summarize")
    papers.data.split = "val"
    return {"news-validation": (news, load_examples(news, base)[:news_size]),
            "summarize-validation": (papers, load_examples(papers, papers_base)[:summarize_size])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="0,1,2")
    parser.add_argument("--candidates", default="3")
    parser.add_argument("--refill", default="1,0", help="1: the refiner's fill is offered beside the source copies; 0: copies only")
    parser.add_argument("--deletions", default="0", help="1: cutting a span out is offered too; 0: not")
    parser.add_argument("--news-size", type=int, default=64)
    parser.add_argument("--summarize-size", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--refiner", default="summarize")
    parser.add_argument("--kinds", default="entity,number", help="what is checked against the source (entity,number,word)")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    import torch

    from hybrid.consistency.classifier import ConsistencyClassifier
    from hybrid.evaluation.metrics.grounding import aggregate_grounding, score_grounding
    from hybrid.evaluation.metrics.summaries import rouge_scores
    from hybrid.pipeline import HybridPipeline

    torch.set_num_threads(2)
    pipe = HybridPipeline.from_pretrained(refiner=args.refiner)
    classifier = ConsistencyClassifier()
    rows = []
    for name, (suite, examples) in splits(args.news_size, args.summarize_size).items():
        if not examples:  # --news-size 0 or --summarize-size 0: that split is left out
            continue
        drafts, draft_s = [], 0.0
        for start in range(0, len(examples), args.batch_size):
            batch = examples[start : start + args.batch_size]
            drafts.append(pipe.draft([e.prompt for e in batch], max_new_tokens=suite.max_new_tokens))
            draft_s += drafts[-1].timings.total_s
        texts = [t for d in drafts for t in d.texts]
        settings = [(None, None, None, None)] + list(itertools.product([float(w) for w in args.weights.split(",")],
                                                                       [int(c) for c in args.candidates.split(",")],
                                                                       [bool(int(r)) for r in args.refill.split(",")],
                                                                       [bool(int(d)) for d in args.deletions.split(",")]))
        for weight, count, refill, deletions in settings:
            outputs, refine_s = texts, 0.0
            if weight is not None:
                outputs = []
                for index, draft in enumerate(drafts):
                    batch = examples[index * args.batch_size : (index + 1) * args.batch_size]
                    results = pipe([e.prompt for e in batch], max_new_tokens=suite.max_new_tokens, draft=draft, select="unsupported",
                                   source=[e.source for e in batch], ground_weight=weight, ground_candidates=count,
                                   ground_refill=refill, ground_deletions=deletions, ground_kinds=tuple(args.kinds.split(",")))
                    outputs += [r.text for r in results]
                    refine_s += sum(r.timings.refine_s for r in results) / len(results)
            grounding = aggregate_grounding(score_grounding(o, e.source) for o, e in zip(outputs, examples))
            row = {"split": name, "kinds": args.kinds, "ground_weight": weight, "candidates": count, "refill": refill, "deletions": deletions, "changed": sum(o != t for o, t in zip(outputs, texts)),
                   "texts": len(texts), "entity_precision": grounding.entity_precision, "number_precision": grounding.number_precision,
                   "entities": grounding.entities, "numbers": grounding.numbers,
                   "rougeL": rouge_scores(outputs, [e.reference for e in examples]).rougeL,
                   "consistency": sum(classifier.score_text(o, e.source).mean for o, e in zip(outputs, examples)) / len(examples), "refine_over_draft": refine_s / draft_s}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
