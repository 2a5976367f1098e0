"""Ship a trained block drafter: its weights rounded to bfloat16 (half the size) into checkpoints/block-drafter, where
`--speculate diffusion` and `both` find it, with its model card and its validation measured again on the rounded
weights (the same prompts and settings as the card's, written under "The shipped copy").

    .venv/bin/python scripts/ship_block_drafter.py runs/block-drafter [--output checkpoints/block-drafter] [--dtype float32]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import torch

SHIPPED_SAID = """
## The shipped copy

`checkpoints/block-drafter` holds these weights rounded to {dtype} ({size:.1f} MB; loading casts them to the drafter's
dtype), written by `python scripts/ship_block_drafter.py {run}` after `{command}`. Its validation, measured again on the rounded weights
(the same {prompts} prompts, {tokens} tokens each, every slot proposed, the shortlist on): {after:.3f} tokens per verify
pass against {before:.3f} for the weights as trained; kept per slot {kept}.
"""


def overrides(recipe: dict) -> list[str]:
    """The `block_drafter.key=value` overrides of the shipped recipe that give this recipe."""
    from dataclasses import asdict

    from hybrid.drafting.block_recipe import read_block_recipe

    shipped = asdict(read_block_recipe("block-drafter"))
    return [f"block_drafter.{key}={value}" for key, value in recipe.items() if key in shipped and shipped[key] != value]


def main() -> None:
    from hybrid.atomic import atomic_file
    from hybrid.drafting.block_drafter import CONFIG_NAME, WEIGHTS_NAME, BlockDrafter
    from hybrid.drafting.block_recipe import tokens_per_pass, validation_prompts
    from hybrid.drafting.drafter import Drafter
    from hybrid.models import load_causal_lm
    from hybrid.resources import SOURCE_ROOT

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="the block drafter folder `hybrid finetune recipes/block-drafter.yaml` wrote")
    parser.add_argument("--output", default=str(SOURCE_ROOT / "checkpoints" / "block-drafter"))
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run, output = Path(args.run), Path(args.output)
    config = json.loads((run / CONFIG_NAME).read_text())
    recipe, trained = config["provenance"]["recipe"], config["provenance"]["validation"]
    model, tokenizer = load_causal_lm(config["base_model"])
    BlockDrafter.load(run, model, merge=False).save(output, dtype=getattr(torch, args.dtype))
    shipped = BlockDrafter.load(output, model)  # as drafting loads it: LoRA merged
    measured = tokens_per_pass(Drafter(model, tokenizer), shipped, validation_prompts(trained["prompts"]), recipe["eval_tokens"])
    card = (run / "README.md").read_text() if (run / "README.md").is_file() else ""
    command = " ".join(["hybrid finetune recipes/block-drafter.yaml"] + overrides(recipe))
    card += SHIPPED_SAID.format(dtype=args.dtype, command=command, size=(output / WEIGHTS_NAME).stat().st_size / 1e6, run=args.run,
                                prompts=measured["prompts"], tokens=recipe["eval_tokens"], after=measured["tokens_per_pass"],
                                before=trained["tokens_per_pass"], kept=", ".join(f"{k:.2f}" for k in measured["kept_per_slot"]))
    with atomic_file(output / "README.md") as tmp:
        tmp.write_text(card)
    if (run / "summary.json").is_file():
        with atomic_file(output / "summary.json") as tmp:
            shutil.copy(run / "summary.json", tmp)
    print(f"{output}: {measured['tokens_per_pass']:.3f} tokens per verify pass on validation (as trained: {trained['tokens_per_pass']:.3f})")


if __name__ == "__main__":
    main()
