"""The product objective (loss on log p_drafter + w log p_refiner) and the draft-token input at re-noised slots."""

import json

import pytest
import torch

from hybrid.finetune.objective import Batch, Corruption, combine, loss_terms
from tiny import TINY, tiny_overrides


def test_a_zero_residual_leaves_the_drafters_loss():
    """With a refiner that says nothing (uniform logits) the product's cross-entropy is the drafter's own."""
    torch.manual_seed(0)
    target = torch.tensor([[3, 1, 4, 1]])
    batch = Batch(torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2, dtype=torch.long), target, torch.ones_like(target, dtype=torch.bool))
    masked = torch.ones_like(batch.valid)
    drafter = torch.randn(1, 4, 6)
    corruption = Corruption(target, masked, torch.zeros_like(masked), drafter_logits=drafter)
    flat = torch.zeros(1, 4, 6)
    expected = torch.nn.functional.cross_entropy(drafter[0], target[0])
    assert loss_terms(flat, batch, corruption, 0.1, residual_weight=1.0)["masked"] == pytest.approx(float(expected), abs=1e-5)
    sharp = torch.zeros(1, 4, 6).scatter_(-1, target[..., None], 5.0)  # a refiner sure of the truth lowers it
    assert loss_terms(sharp, batch, corruption, 0.1, residual_weight=1.0)["masked"] < expected
    assert torch.allclose(combine(drafter, flat, 2.0).softmax(-1), drafter.softmax(-1), atol=1e-6)


def test_a_draft_input_refiner_sees_the_token_under_the_mask(tiny_model_dir):
    from hybrid.models import load_causal_lm
    from hybrid.refiner import Refiner

    model, _ = load_causal_lm(str(tiny_model_dir))
    refiner = Refiner.create(model, str(tiny_model_dir), lora_r=4, lora_alpha=8, bidirectional_layers=1)
    refiner.config.renoised_input = "draft"
    with torch.no_grad():
        refiner.mask_marker.normal_()
    prompt, mask = torch.tensor([[5, 6, 7]]), torch.ones(1, 3, dtype=torch.long)
    canvas = torch.tensor([[8, refiner.mask_token_id, 10, 11]])
    shown = lambda token: torch.tensor([[-1, token, -1, -1]])  # noqa: E731
    with torch.no_grad():
        a, b = refiner(prompt, mask, canvas, shown=shown(20)).logits, refiner(prompt, mask, canvas, shown=shown(30)).logits
        plain = refiner(prompt, mask, canvas).logits
        # the prompt-cached path reads the shown tokens from the prompt state, and agrees with the training pass
        state = refiner.encode_prompt(prompt, mask)
        state.shown = shown(20)
        cached = refiner.canvas_logits(state, canvas)
    assert not torch.allclose(a, b) and not torch.allclose(a, plain)
    assert torch.allclose(cached, a, atol=1e-4)


def test_a_tiny_product_run_records_its_weight_and_input(tiny_model_dir, tmp_path):
    from hybrid.finetune.recipe import load_recipe
    from hybrid.finetune.methods import run_recipe
    from hybrid.pipeline import HybridPipeline

    out = tmp_path / "run"
    run_recipe(load_recipe(TINY, tiny_overrides(tiny_model_dir, out, steps=2) + ["objective.residual_weight=0.5", "objective.renoised_input=draft"]))
    config = json.loads((out / "refiner_config.json").read_text())
    assert config["residual_weight"] == 0.5 and config["renoised_input"] == "draft"
    figures = json.loads((out / "validation.json").read_text())["validation"]
    assert figures["residual_weight"] == 0.5 and figures["real_drafts"]["drafts"] == 4
    pipe = HybridPipeline.from_pretrained(draft_model=str(tiny_model_dir), refiner=str(out))
    assert pipe.refiner.residual_weight == 0.5
    assert pipe("Hello", max_new_tokens=6, refine_steps=2).steps_run >= 1


def test_a_refiner_saved_before_the_product_objective_loads_with_the_untrained_weight(tiny_refiner_dir, tmp_path):
    import shutil

    from hybrid.refiner import read_config

    old = tmp_path / "old"
    shutil.copytree(tiny_refiner_dir, old)
    raw = json.loads((old / "refiner_config.json").read_text())
    raw.pop("residual_weight"), raw.pop("renoised_input")
    (old / "refiner_config.json").write_text(json.dumps(raw))
    config = read_config(old)
    assert config.residual_weight == 1.0 and config.renoised_input == "mask"


def test_a_draft_input_needs_a_partial_refiner(tiny_model_dir):
    from hybrid.errors import HybridError
    from hybrid.models import load_causal_lm
    from hybrid.refiner import Refiner, RefinerConfig, fingerprint

    model, _ = load_causal_lm(str(tiny_model_dir))
    with pytest.raises(HybridError, match="renoised_input"):
        Refiner(model, RefinerConfig(str(tiny_model_dir), fingerprint(model), lora_r=4, renoised_input="draft"))
