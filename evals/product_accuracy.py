"""Fill accuracy of the proposal distribution (log p_drafter + w log p_refiner) against either expert alone, on text
no refiner trained on: windows of the three held-out plays and of ACLSum test papers (32 + 48 words each, the issue's
measurement set), at 15% and 30% masking. Run from the project root:

    .venv/bin/python evals/product_accuracy.py checkpoints/general [more refiner folders] [--windows 64]
"""

from __future__ import annotations

import argparse
import json
import random


def held_out_examples(tokenizer, windows: int):
    from hybrid.data.aclsum import paper_texts
    from hybrid.data.shakespeare import play_names, shakespeare_texts
    from hybrid.finetune.data import passages_to_pairs, tokenise
    from hybrid.finetune.recipe import load_recipe
    from hybrid.resources import shipped

    every = play_names()
    held_out = ["hamlet", "macbeth", "the-tempest"]
    plays = passages_to_pairs(shakespeare_texts([p for p in every if p not in held_out]), 32, 48)
    papers = passages_to_pairs(paper_texts("test"), 32, 48)
    random.Random(0).shuffle(plays)
    random.Random(0).shuffle(papers)
    data = load_recipe(shipped("recipes/continue.yaml")).data
    return tokenise(plays[:windows] + papers[:windows], tokenizer, data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("refiners", nargs="+")
    parser.add_argument("--windows", type=int, default=64, help="windows from each source (plays, papers)")
    parser.add_argument("--renoised-input", choices=["mask", "draft"], default=None,
                        help="override what re-noised slots show the lower layers (to measure a refiner untrained for it)")
    parser.add_argument("--weights", default="", help="comma-separated residual weights to try (default: the refiner's own)")
    args = parser.parse_args()

    from hybrid.finetune.validation import product_accuracy
    from hybrid.models import load_causal_lm
    from hybrid.refiner import Refiner

    for folder in args.refiners:
        model, tokenizer = load_causal_lm("smollm2-135m", "float32")
        examples = held_out_examples(tokenizer, args.windows)
        refiner = Refiner.load(folder, model).eval()
        if args.renoised_input:
            refiner.config.renoised_input = args.renoised_input
            refiner.check_renoised_input()
        weights = tuple(float(w) for w in args.weights.split(",") if w.strip()) or None
        for figures in product_accuracy(refiner, examples, tokenizer.pad_token_id, tokenizer.eos_token_id, weights=weights):
            print(json.dumps({"folder": folder, "windows": len(examples), "renoised_input": refiner.config.renoised_input} | vars(figures)), flush=True)


if __name__ == "__main__":
    main()
