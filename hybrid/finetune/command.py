"""`hybrid finetune RECIPE [key=value ...]`: the click command (it prints; the library logs)."""

from __future__ import annotations

import json

import click


@click.command()
@click.argument("recipe", type=str)
@click.argument("overrides", nargs=-1)
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in the recipe's output_dir.")
@click.option("--output", default=None, help="Output folder (overrides train.output_dir).")
@click.option("--score-refiner", "--validate", "validate", default=None, metavar="REFINER",
              help="Train nothing: score the refiner folder REFINER on this recipe's held-out examples and print the figures.")
def finetune(recipe, overrides, resume, output, validate):
    """Train a refiner (or a block drafter, or build a lookup store) from RECIPE (a YAML file, or a shipped recipe's name: see `hybrid recipes ls`); OVERRIDES are
    dotted key=value pairs.

    \b
    hybrid finetune summarize
    hybrid finetune recipes/summarize.yaml
    hybrid finetune recipes/continue.yaml train.steps=50 --output runs/quick
    hybrid finetune recipes/continue.yaml --resume
    hybrid finetune recipes/continue.yaml --score-refiner checkpoints/general
    """
    from hybrid.drafting.block_recipe import read_block_recipe, run_block_recipe
    from hybrid.drafting.store_recipe import read_store_recipe, run_store_recipe
    from hybrid.finetune.recipe import load_recipe
    from hybrid.finetune.methods import run_recipe
    from hybrid.finetune.training import validate_saved_refiner

    block = read_block_recipe(recipe, list(overrides) + ([f"block_drafter.output_dir={output}"] if output else []))
    if block is not None:  # a block drafter for speculative drafting (hybrid.drafting.block_recipe)
        if resume or validate:
            raise click.UsageError("a block-drafter recipe takes neither --resume nor --score-refiner")
        summary = run_block_recipe(block, recipe)
        last = summary["learning_curve"][-1]
        text = f" and {summary['text_tokens']} anchor tokens of plain text" if summary["text_tokens"] else ""
        click.echo(f"trained {block.steps} steps on {summary['distilled_tokens']} distilled tokens{text}, final loss {summary['final_loss']:.3f}; "
                   f"{last['tokens_per_pass']:.2f} tokens per verify pass on the validation prompts")
        click.echo(f"block drafter written to {block.output_dir}: use it with `hybrid generate --speculate diffusion --block-drafter {block.output_dir}`")
        return
    store = read_store_recipe(recipe, list(overrides) + ([f"lookup_store.output_dir={output}"] if output else []))
    if store is not None:  # drafted text for lookup speculation (hybrid.drafting.store_recipe)
        if resume or validate:
            raise click.UsageError("a lookup-store recipe takes neither --resume nor --score-refiner")
        summary = run_store_recipe(store, recipe)
        figures = summary["tokens_per_pass"]
        click.echo(f"stored {summary['tokens']:,} drafted tokens of {summary['prompts']} prompts; lookup on the validation prompts: "
                   f"{figures['lookup_with_store']:.2f} tokens per verify pass with the store, {figures['lookup']:.2f} without")
        click.echo(f"lookup store written to {store.output_dir}: use it with `hybrid generate --lookup-store {store.output_dir}`")
        return
    overrides = list(overrides) + ([f"train.output_dir={output}"] if output else [])
    config = load_recipe(recipe, overrides)  # validated before any model or data loads
    if validate:
        figures = validate_saved_refiner(config, validate)
        click.echo(json.dumps(_rounded(figures)))
        return
    result = run_recipe(config, resume=resume)
    click.echo(f"trained {result.steps} steps in {result.seconds:.0f} s ({result.tokens_per_s:.0f} tokens/s), final loss {result.final_loss:.3f}")
    if result.validation:
        click.echo("validation: " + json.dumps(_rounded(result.validation)))
    click.echo(f"refiner written to {result.output_dir}: use it with `hybrid generate --refiner {result.output_dir}`")


def _rounded(figures: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}
