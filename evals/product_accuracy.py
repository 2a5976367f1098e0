"""Fill accuracy of the proposal distribution (log p_drafter + w log p_refiner) against either expert alone, on text
no refiner trained on: windows of the three held-out plays and of ACLSum papers (32 + 48 words each), at 15% and 30%
masking. Two splits:

* test (the issue's measurement set): the first windows of the held-out plays (shuffled) and of ACLSum test papers;
* validation (for choosing between refiners): the last windows of the held-out plays, none of which the continue
  report prompts with, and windows of ACLSum val papers (no report and no training reads them).

Each refiner after the first is paired with the first, window by window (the masked positions are the same draws):
"delta" is the mean over windows of the difference in the product's fill accuracy, with a 95% bootstrap interval.

Run from the project root:

    .venv/bin/python evals/product_accuracy.py checkpoints/general [more refiner folders] [--windows 64] [--split validation]
"""

from __future__ import annotations

import argparse
import json
import random


def held_out_examples(tokenizer, windows: int, split: str = "test"):
    from hybrid.data.aclsum import paper_texts
    from hybrid.data.shakespeare import play_names, shakespeare_texts
    from hybrid.finetune.data import passages_to_pairs, tokenise
    from hybrid.finetune.recipe import load_recipe
    from hybrid.resources import shipped

    every = play_names()
    held_out = ["hamlet", "macbeth", "the-tempest"]
    plays = passages_to_pairs(shakespeare_texts([p for p in every if p not in held_out]), 32, 48)
    papers = passages_to_pairs(paper_texts("test" if split == "test" else "val"), 32, 48)
    random.Random(0).shuffle(plays)
    random.Random(0).shuffle(papers)
    if split == "validation":  # from the end, so that the test windows (from the front) are not among them
        reported = _continue_report_grams()
        plays = [pair for pair in plays[len(plays) // 2 :] if not _grams(f"{pair.prompt} {pair.target}") & reported][-windows:]
    data = load_recipe(shipped("recipes/continue.yaml")).data
    return tokenise(plays[:windows] + papers[:windows], tokenizer, data)


def _grams(text: str, n: int = 8) -> set[tuple[str, ...]]:
    words = text.split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def _continue_report_grams(limit: int = 24) -> set[tuple[str, ...]]:
    """Every 8 words in a row of the committed continue report's windows (`--limit 24` in evals/make_reports.sh): a
    validation window sharing any of them overlaps the report's text."""
    from hybrid.evaluation.harness.suite import load_examples, load_suite

    suite, base = load_suite("continue")
    return set().union(*(_grams(f"{example.prompt} {example.reference}") for example in load_examples(suite, base)[:limit]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("refiners", nargs="+")
    parser.add_argument("--windows", type=int, default=64, help="windows from each source (plays, papers)")
    parser.add_argument("--split", choices=["test", "validation"], default="test", help="which held-out windows (see above)")
    parser.add_argument("--renoised-input", choices=["mask", "draft"], default=None,
                        help="override what re-noised slots show the lower layers (to measure a refiner untrained for it)")
    parser.add_argument("--weights", default="", help="comma-separated residual weights to try (default: the refiner's own)")
    args = parser.parse_args()

    from hybrid.evaluation.harness.report import paired_delta
    from hybrid.finetune.validation import product_accuracy
    from hybrid.models import load_causal_lm
    from hybrid.refiner import Refiner

    first = {}  # (rate, weight) -> the first refiner's accuracy per window, which the others are paired with
    for folder in args.refiners:
        model, tokenizer = load_causal_lm("smollm2-135m", "float32")
        examples = held_out_examples(tokenizer, args.windows, args.split)
        refiner = Refiner.load(folder, model).eval()
        if args.renoised_input:
            refiner.config.renoised_input = args.renoised_input
            refiner.check_renoised_input()
        weights = tuple(float(w) for w in args.weights.split(",") if w.strip()) or None
        for figures in product_accuracy(refiner, examples, tokenizer.pad_token_id, tokenizer.eos_token_id, weights=weights):
            windows = dict(enumerate(figures.windows))
            key = (figures.rate, None if weights is None else figures.residual_weight)
            paired = {}
            if key in first:  # the same windows and positions (the draws are seeded): paired per window
                delta = paired_delta(windows, first[key])
                paired = {"against": args.refiners[0], "delta": round(delta.mean, 4), "ci95": [round(delta.low, 4), round(delta.high, 4)]}
            first.setdefault(key, windows)
            figures = {k: v for k, v in vars(figures).items() if k != "windows"}
            print(json.dumps({"folder": folder, "split": args.split, "windows": len(examples), "renoised_input": refiner.config.renoised_input} | figures | paired), flush=True)


if __name__ == "__main__":
    main()
