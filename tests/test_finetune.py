"""`hybrid finetune`: recipe validation before any model loads, the objective, AUC, and a tiny run that saves and resumes."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from hybrid.cli import cli
from hybrid.errors import HybridError
from hybrid.finetune.objective import collate, corrupt, loss_terms
from hybrid.finetune.recipe import ObjectiveSection, load_recipe
from hybrid.evaluation.metrics.auc import roc_auc
from tiny import TINY, tiny_overrides

ROOT = Path(__file__).resolve().parent.parent
def test_shipped_recipes_validate():
    for name in ("tiny", "continue", "summarize", "continue-gpu", "summarize-gpu", "continue-detector", "summarize-detector",
                 "continue-product", "continue-4-layers"):
        recipe = load_recipe(ROOT / "recipes" / f"{name}.yaml")
        assert recipe.train.steps == yaml.safe_load((ROOT / "recipes" / f"{name}.yaml").read_text())["train"]["steps"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.stepz=3", "unknown recipe key 'train.stepz'; did you mean 'train.steps'"),
        ("lora.r=big", "'lora.r' must be int"),
        ("trian.steps=3", "unknown recipe key 'trian'"),
        ("data.source=nowhere", "data.source must be"),
        ("objective.schedule=wobbly", "unknown noise schedule"),
        ("train.method=both", "train.method must be lora"),
        ("train.methd=head", "did you mean 'train.method'"),
        ("train.train_lora=maybe", "'train.train_lora' must be bool"),
    ],
)
def test_bad_recipe_fails_before_loading_models(override, message, monkeypatch):
    import hybrid.finetune.training as trainer

    monkeypatch.setattr(trainer, "load_causal_lm", lambda *a, **k: pytest.fail("a model was loaded for a bad recipe"))
    result = CliRunner().invoke(cli, ["finetune", str(TINY), override])
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_the_recipe_names_its_training_method():
    from hybrid.finetune.methods import METHODS
    from hybrid.finetune.recipe import TRAINING_METHODS

    assert tuple(METHODS) == TRAINING_METHODS
    assert load_recipe(TINY).train.method == "lora"
    assert load_recipe(ROOT / "recipes" / "continue-detector.yaml").train.method == "head"
    with pytest.raises(HybridError, match="nothing would train"):
        load_recipe(TINY, ["train.method=head"])  # no detection head in the objective


def test_recipes_that_say_train_lora_keep_their_method(caplog):
    """Recipes from before `train.method` (the copies saved beside the shipped refiners among them) train as they did."""
    with caplog.at_level("WARNING"):
        assert load_recipe(TINY, ["train.train_lora=false", "objective.detection_weight=1"]).train.method == "head"
    assert "train.train_lora: false is read as train.method: head" in caplog.text
    assert load_recipe(TINY, ["train.train_lora=true"]).train.method == "lora"
    with pytest.raises(HybridError, match="contradicts train.method"):
        load_recipe(TINY, ["train.train_lora=true", "train.method=head"])
    copies = {"general/initial_recipe.yaml": "lora", "general/recipe.yaml": "lora", "general/detector_recipe.yaml": "head",
              "summarize/recipe.yaml": "lora", "summarize/detector_recipe.yaml": "head"}
    for name, method in copies.items():
        assert load_recipe(ROOT / "checkpoints" / name).train.method == method, name  # as they are, from any cwd


def _absolute_paths(node, where=""):
    """Every string in a JSON/YAML tree that is an absolute path, with where it is."""
    if isinstance(node, dict):
        return [hit for key, value in node.items() for hit in _absolute_paths(value, f"{where}.{key}")]
    if isinstance(node, list):
        return [hit for i, value in enumerate(node) for hit in _absolute_paths(value, f"{where}[{i}]")]
    return [(where, node)] if isinstance(node, str) and (node.startswith(("/", "~")) or node[1:3] == ":\\") else []


def test_the_records_beside_the_shipped_refiners_name_no_machine_path():
    """Their recipes start from a shipped refiner by name, or from the output_dir of the recipe beside them, and
    their provenance is flat: the recipe and the name of the refiner it started from."""
    from hybrid.refiner.location import SHIPPED_REFINERS

    recipes = sorted((ROOT / "checkpoints").glob("*/*recipe*.yaml"))
    assert len(recipes) >= 7
    for path in recipes:
        raw = yaml.safe_load(path.read_text())
        assert not _absolute_paths(raw), path
        start = raw["model"].get("init_refiner")
        if start and start not in SHIPPED_REFINERS:  # a run's output: the recipe beside it that writes it
            outputs = [yaml.safe_load(other.read_text())["train"]["output_dir"] for other in path.parent.glob("*recipe*.yaml")]
            assert start in outputs, path
            load_recipe(path, [f"model.init_refiner={path.parent}"])
        else:
            load_recipe(path)
    for name, folder in SHIPPED_REFINERS.items():
        config = json.loads((folder / "refiner_config.json").read_text())
        assert not _absolute_paths(config), name
        training = config["training"]
        assert set(training) <= {"model", "data", "objective", "lora", "steps", "initial_refiner"}, name
        assert training.get("initial_refiner") == training["model"].get("init_refiner"), name


def test_a_saved_refiner_records_flat_provenance_without_absolute_paths(tiny_model_dir, tmp_path, monkeypatch):
    """A run from an initial refiner records its recipe as given (paths as the user named them) and that refiner's
    name, not that refiner's own record; a shipped refiner reached by a path is recorded by its shipped name."""
    import os

    from hybrid.finetune.methods import run_recipe
    from hybrid.finetune.recipe import recipe_dict

    monkeypatch.chdir(tmp_path)
    base = os.path.relpath(tiny_model_dir, tmp_path)
    run_recipe(load_recipe(TINY, tiny_overrides(base, "first", steps=2)))
    recipe = load_recipe(TINY, tiny_overrides(base, "second", steps=2) + ["model.init_refiner=first"])
    assert Path(recipe.model.init_refiner).is_absolute()  # resolved to load, recorded as given
    run_recipe(recipe)
    config = json.loads(Path("second/refiner_config.json").read_text())
    assert not _absolute_paths(config)
    training = config["training"]
    assert training["initial_refiner"] == training["model"]["init_refiner"] == "first"
    assert training["steps"] == 2 and "initial_refiner_training" not in training and "train" not in training
    assert not any(isinstance(value, dict) for value in training["model"].values())  # nothing of the first run's record
    saved = yaml.safe_load(Path("second/recipe.yaml").read_text())
    assert not _absolute_paths(saved) and saved["model"]["init_refiner"] == "first"
    again = load_recipe("second/recipe.yaml")  # the saved recipe loads again, from the same cwd
    assert Path(again.model.init_refiner).resolve() == (tmp_path / "first").resolve()
    shipped = load_recipe(ROOT / "recipes" / "continue-product.yaml")  # init_refiner: ../checkpoints/general
    assert recipe_dict(shipped, as_given=True)["model"]["init_refiner"] == "general"
    assert recipe_dict(shipped)["model"]["init_refiner"] == str(ROOT / "checkpoints" / "general")


def test_missing_recipe_file():
    result = CliRunner().invoke(cli, ["finetune", "no/such/recipe.yaml"])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_auc_against_hand_computed_cases():
    assert roc_auc([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 1.0
    assert roc_auc([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0]) == 0.0
    assert roc_auc([0.5, 0.5], [1, 0]) == 0.5
    assert roc_auc([0.9, 0.3, 0.5, 0.1], [1, 0, 1, 0]) == 1.0
    assert roc_auc([0.9, 0.6, 0.5, 0.1], [1, 0, 1, 0]) == 0.75


def test_corruption_follows_the_schedule_and_substitutes_differ():
    from hybrid.finetune.data import TokenisedExample

    examples = [TokenisedExample([5, 6], list(range(10, 110))) for _ in range(64)]
    batch = collate(examples, pad_id=0, end_id=2, slack=4)
    substitutes = batch.target_ids + 1
    config = ObjectiveSection(schedule="linear", min_mask_rate=0.05, substitution_rate=0.2)
    out = corrupt(batch, substitutes, mask_id=999, config=config, generator=torch.Generator().manual_seed(0))
    rate = out.masked[batch.valid].float().mean().item()
    assert 0.4 < rate < 0.65  # linear schedule: E[t] over U(0.05, 1) is 0.525
    visible = batch.valid & ~out.masked
    share = out.substituted[visible].float().mean().item()
    assert 0.15 < share < 0.25
    assert (out.canvas[out.masked] == 999).all()
    assert (out.canvas[out.substituted] != batch.target_ids[out.substituted]).all()
    assert not (out.masked & out.substituted).any()


def test_loss_counts_masked_and_substituted_positions():
    from hybrid.finetune.data import TokenisedExample

    batch = collate([TokenisedExample([1], [3, 4, 5, 6])], pad_id=0, end_id=2, slack=0)
    logits = torch.full((1, 4, 10), -10.0)
    logits[0, torch.arange(4), batch.target_ids[0]] = 10.0  # perfect predictions everywhere
    logits[0, 1] = 0.0  # ...except at position 1
    from hybrid.finetune.objective import Corruption

    masked = torch.tensor([[False, True, False, False]])
    none = torch.zeros_like(masked)
    wrong_where_masked = loss_terms(logits, batch, Corruption(batch.target_ids, masked, none), clean_weight=0.0)
    masked_elsewhere = loss_terms(logits, batch, Corruption(batch.target_ids, masked.roll(1), none), clean_weight=0.0)
    assert wrong_where_masked["loss"] > 1.0 > masked_elsewhere["loss"]


def test_tiny_run_trains_saves_resumes_and_loads(tiny_model_dir, tmp_path):
    from hybrid.finetune.recipe import load_recipe
    from hybrid.finetune.lora_training import LoraTraining
    from hybrid.finetune.methods import run_recipe
    from hybrid.pipeline import HybridPipeline
    from safetensors.torch import load_file

    straight = tmp_path / "straight"
    run_recipe(load_recipe(TINY, tiny_overrides(tiny_model_dir, straight, steps=4)))
    log = [json.loads(line) for line in (straight / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and "validation" in log[-1]
    assert {"masked_accuracy", "detection_auc", "repair_restored"} <= set(json.loads((straight / "validation.json").read_text())["validation"])

    # the same run stopped after 2 steps, then resumed to 4, must end with the same weights and loss
    resumed = tmp_path / "resumed"
    run_recipe(load_recipe(TINY, tiny_overrides(tiny_model_dir, resumed, steps=2)))
    trainer = LoraTraining(load_recipe(TINY, tiny_overrides(tiny_model_dir, resumed, steps=4)), resume=True)
    trainer.setup()
    assert trainer.step == 2
    result = trainer.train()
    trainer.cleanup(result)
    a, b = load_file(str(straight / "refiner.safetensors")), load_file(str(resumed / "refiner.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    resumed_log = [json.loads(line) for line in (resumed / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in resumed_log] == [1, 2, 3, 4]
    assert resumed_log[-1]["loss"] == pytest.approx(log[-1]["loss"], abs=1e-5)

    pipe = HybridPipeline.from_pretrained(draft_model=str(tiny_model_dir), refiner=str(straight))
    assert pipe("Hello", max_new_tokens=6, refine_steps=2).steps_run >= 1


def test_starting_over_an_existing_run_is_refused(tiny_model_dir, tmp_path):
    from hybrid.finetune.recipe import load_recipe
    from hybrid.finetune.methods import run_recipe

    out = tmp_path / "run"
    run_recipe(load_recipe(TINY, tiny_overrides(tiny_model_dir, out, steps=2)))
    with pytest.raises(HybridError, match="--resume"):
        run_recipe(load_recipe(TINY, tiny_overrides(tiny_model_dir, out, steps=2)))


def test_lora_training_lays_its_initial_refiner_out_as_the_recipe_says(tiny_model_dir, tmp_path):
    """model.init_refiner with another lora.bidirectional_layers: the run trains and saves the recipe's layout (the
    layers both have start from the initial refiner's LoRA); head-only training keeps the initial layout."""
    from safetensors.torch import load_file

    from hybrid.finetune.methods import run_recipe
    from hybrid.refiner import ADAPTER_WEIGHTS_NAME

    first, narrow = tmp_path / "first", tmp_path / "narrow"
    run_recipe(load_recipe(TINY, tiny_overrides(tiny_model_dir, first, steps=2) + ["lora.bidirectional_layers=0"]))
    run_recipe(load_recipe(TINY, tiny_overrides(tiny_model_dir, narrow, steps=2) + [f"model.init_refiner={first}", "lora.bidirectional_layers=1"]))
    assert json.loads((narrow / "refiner_config.json").read_text())["bidirectional_layers"] == 1
    before, after = load_file(str(first / ADAPTER_WEIGHTS_NAME)), load_file(str(narrow / ADAPTER_WEIGHTS_NAME))
    assert any(".layers.0." in k for k in before) and after and all(".layers.1." in k for k in after)
    assert set(after) == {k for k in before if ".layers.1." in k}
    head = tmp_path / "head"
    run_recipe(load_recipe(TINY, tiny_overrides(tiny_model_dir, head, steps=2) + [f"model.init_refiner={first}", "lora.bidirectional_layers=1",
                                                                                "train.method=head", "objective.detection_weight=1"]))
    assert json.loads((head / "refiner_config.json").read_text())["bidirectional_layers"] == 0
    unset = tmp_path / "unset"  # lora.bidirectional_layers left unset: the initial refiner's layout
    run_recipe(load_recipe(TINY, tiny_overrides(tiny_model_dir, unset, steps=2) + [f"model.init_refiner={first}", "lora.bidirectional_layers=null"]))
    assert json.loads((unset / "refiner_config.json").read_text())["bidirectional_layers"] == 0
    assert load_recipe(unset / "recipe.yaml", [f"model.init_refiner={first}"]).lora.bidirectional_layers is None  # a saved null reloads


def test_validate_a_saved_refiner_on_the_recipes_held_out_examples(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    trained = CliRunner().invoke(cli, ["finetune", str(TINY), *tiny_overrides(tiny_model_dir, out, steps=2)])
    assert trained.exit_code == 0, trained.output
    result = CliRunner().invoke(cli, ["finetune", str(TINY), f"model.base={tiny_model_dir}", "--validate", str(out)])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    saved = json.loads((out / "validation.json").read_text())["validation"]
    assert figures["examples"] == saved["examples"]
    for key in ("masked_accuracy", "detection_auc", "repair_restored", "repair_broken"):
        assert figures[key] == pytest.approx(saved[key], abs=1e-3)
    missing = CliRunner().invoke(cli, ["finetune", str(TINY), f"model.base={tiny_model_dir}", "--validate", str(tmp_path / "nope")])
    assert missing.exit_code != 0 and "Traceback" not in missing.output


def test_resume_without_checkpoint_is_clear(tiny_model_dir, tmp_path):
    result = CliRunner().invoke(cli, ["finetune", str(TINY), *tiny_overrides(tiny_model_dir, tmp_path / "none"), "--resume"])
    assert result.exit_code == 2 and "nothing to resume" in result.output


def test_interrupt_saves_a_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    from hybrid.finetune.recipe import load_recipe
    from hybrid.finetune.lora_training import LoraTraining
    from hybrid.finetune.training import TrainingInterrupted

    trainer = LoraTraining(load_recipe(TINY, tiny_overrides(tiny_model_dir, tmp_path / "run", steps=4) + ["train.save_every=100"]))
    trainer.setup()
    original = trainer._train_step

    def interrupt_at_third(step):
        if step == 2:
            raise KeyboardInterrupt
        return original(step)

    monkeypatch.setattr(trainer, "_train_step", interrupt_at_third)
    with pytest.raises(TrainingInterrupted, match="step 2"):
        trainer.train()
    state = json.loads((tmp_path / "run" / "checkpoint-latest" / "trainer_state.json").read_text())
    assert state["step"] == 2


@pytest.mark.slow
def test_two_processes_under_accelerate_launch(tiny_model_dir, tmp_path):
    """The same recipe under `accelerate launch --num_processes 2` on the CPU (gloo) finishes and writes one checkpoint."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1", "--cpu",
               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "hybrid.cli", "finetune", str(TINY),
               *tiny_overrides(tiny_model_dir, out, steps=2)]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "checkpoint-latest" / "trainer_state.json").is_file()
    assert json.loads((out / "checkpoint-latest" / "trainer_state.json").read_text())["step"] == 2
    assert [p.name for p in out.iterdir() if p.name.startswith("checkpoint")] == ["checkpoint-latest"]
    assert (out / "refiner.safetensors").is_file()


def test_random_substitutes_are_wrong_uniform_tokens():
    from hybrid.finetune.data import TokenisedExample
    from hybrid.finetune.objective import random_substitutes

    batch = collate([TokenisedExample([1], [i % 50 for i in range(400)])], pad_id=0, end_id=2, slack=0)
    drafter = torch.full_like(batch.target_ids, 7)
    mixed = random_substitutes(batch, drafter, vocab=50, share=0.5, generator=torch.Generator().manual_seed(0))
    uniform = mixed != 7
    assert 150 < int(uniform.sum()) < 250  # about half replaced
    assert not (mixed[uniform] == batch.target_ids[uniform]).any()  # never the true token
    assert int(mixed[uniform].max()) < 50 and len(set(mixed[uniform].tolist())) > 30  # spread over the vocabulary
    none = random_substitutes(batch, drafter, vocab=50, share=0.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(none, drafter)


def test_training_metrics_also_go_to_a_tracker(tiny_model_dir, tmp_path):
    from hybrid.finetune.methods import run_recipe

    out = tmp_path / "tracked"
    run_recipe(load_recipe(ROOT / "recipes" / "tiny.yaml", tiny_overrides(tiny_model_dir, out, steps=2) + ["train.log_with=[tensorboard]"]))
    events = list((out / "trackers").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    assert (out / "train_log.jsonl").read_text().strip()  # the run's own log stays


def test_an_unknown_tracker_is_refused():
    with pytest.raises(HybridError, match="log_with"):
        load_recipe(ROOT / "recipes" / "tiny.yaml", ["train.log_with=[nosuchtracker]"])
