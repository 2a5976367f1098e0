"""`hybrid recipes ls | cp NAME DEST | validate RECIPE [key=value ...]`: find, copy and check training recipes.

Nothing here loads a model or data, or imports torch: `validate` prints the resolved recipe at once.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import yaml


@click.group()
def recipes():
    """List, copy and check training recipes (shipped ones go by name)."""


@recipes.command(name="ls")
def list_recipes():
    """List the shipped recipes with the first line of each one's description."""
    from hybrid.finetune.recipe import shipped_recipes

    for name, path in shipped_recipes().items():
        click.echo(f"{name:<22} {_description(path)}")


@recipes.command(name="cp")
@click.argument("name")
@click.argument("dest", type=click.Path())
@click.option("--force", is_flag=True, help="Overwrite DEST if it exists.")
def copy_recipe(name, dest, force):
    """Copy the shipped recipe NAME to DEST (a file, or a folder to put NAME.yaml in), to edit and train.

    \b
    hybrid recipes cp summarize my_summarize.yaml
    """
    from hybrid.errors import HybridError
    from hybrid.finetune.recipe import resolve_recipe, shipped_recipes

    if name not in shipped_recipes():
        resolve_recipe(name)  # the one-line error, with a suggestion
    source = shipped_recipes()[name]
    target = Path(dest)
    if target.is_dir():
        target = target / source.name
    if target.exists() and not force:
        raise HybridError(f"{target} exists: pass --force to overwrite it")
    if not target.parent.is_dir():
        raise HybridError(f"folder {target.parent} does not exist")
    # A shipped refiner named by its path relative to recipes/ is named by its shipped name in the copy, so that the
    # copy finds it from anywhere.
    text = re.sub(r"(init_refiner:\s*)\.\./checkpoints/([\w-]+)", r"\1\2", source.read_text())
    target.write_text(text)
    click.echo(f"copied {name} to {target}: train it with `hybrid finetune {target}`")


@recipes.command(name="validate")
@click.argument("recipe")
@click.argument("overrides", nargs=-1)
def validate_recipe(recipe, overrides):
    """Check RECIPE (a file or a shipped name) with OVERRIDES applied, and print it resolved, with every default.

    \b
    hybrid recipes validate summarize train.steps=20
    """
    from dataclasses import asdict

    from hybrid.drafting import block_recipe, store_recipe
    from hybrid.finetune.recipe import load_recipe, recipe_dict

    block = block_recipe.read_block_recipe(recipe, list(overrides))
    store = store_recipe.read_store_recipe(recipe, list(overrides)) if block is None else None
    if block is not None or store is not None:
        section = block_recipe.SECTION if block is not None else store_recipe.SECTION
        resolved = {section: asdict(block if block is not None else store)}
    else:
        resolved = recipe_dict(load_recipe(recipe, list(overrides)))
    click.echo(yaml.safe_dump(resolved, sort_keys=False).rstrip())


def _description(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""
