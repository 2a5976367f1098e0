"""`hybrid recipes ls | cp | validate` and shipped recipe names in `hybrid finetune`."""

import subprocess
import sys
from pathlib import Path

import yaml
from click.testing import CliRunner

from hybrid.cli import cli
from hybrid.finetune.recipe import load_recipe, shipped_recipes

ROOT = Path(__file__).resolve().parent.parent


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_ls_lists_every_shipped_recipe():
    names = {p.stem for p in (ROOT / "recipes").glob("*.yaml")}
    listed = {line.split()[0] for line in run("recipes", "ls").output.splitlines()}
    assert names and listed == names == set(shipped_recipes())


def test_cp_copies_and_keeps_shipped_refiners_findable(tmp_path):
    result = run("recipes", "cp", "summarize-product", str(tmp_path))
    assert result.exit_code == 0, result.output
    copy = tmp_path / "summarize-product.yaml"
    assert yaml.safe_load(copy.read_text())["model"]["init_refiner"] == "summarize"
    assert load_recipe(copy).model.init_refiner == str(ROOT / "checkpoints" / "summarize")
    again = run("recipes", "cp", "summarize-product", str(tmp_path))
    assert again.exit_code == 2 and "--force" in again.output
    assert run("recipes", "cp", "summarize-product", str(tmp_path), "--force").exit_code == 0


def test_validate_prints_the_resolved_recipe_with_overrides():
    result = run("recipes", "validate", "tiny", "train.steps=7")
    assert result.exit_code == 0, result.output
    resolved = yaml.safe_load(result.output)
    assert resolved["train"]["steps"] == 7 and "objective" in resolved
    bad = run("recipes", "validate", "tiny", "train.stepz=7")
    assert bad.exit_code == 2 and len(bad.output.strip().splitlines()) == 1


def test_validate_imports_no_torch():
    code = ("import sys; from click.testing import CliRunner; from hybrid.cli import cli; "
            "r = CliRunner().invoke(cli, ['recipes', 'validate', 'summarize']); assert r.exit_code == 0, r.output; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_unknown_recipe_name_suggests_the_close_one():
    result = run("recipes", "validate", "summarise")
    assert result.exit_code == 2 and "did you mean 'summarize'" in result.output


def test_validate_reads_the_one_section_recipes():
    result = run("recipes", "validate", "lookup-store", "lookup_store.prompts=7")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.output)["lookup_store"]["prompts"] == 7
    assert yaml.safe_load(run("recipes", "validate", "block-drafter").output)["block_drafter"]["layers"] == 4
    bad = run("recipes", "validate", "lookup-store", "lookup_store.prompts=many")
    assert bad.exit_code == 2 and "lookup_store.prompts must be int" in bad.output
