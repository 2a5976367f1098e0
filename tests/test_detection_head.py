"""The replaced-token detection head: its start, its two code paths, persistence, its loss and head-only training."""

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from hybrid.cli import cli
from hybrid.errors import HybridError
from hybrid.finetune.data import TokenisedExample
from hybrid.finetune.objective import Corruption, collate, loss_terms
from hybrid.refiner import WEIGHTS_NAME, Refiner
from hybrid.sampler import score_draft
from test_finetune import TINY, tiny_overrides
from test_refiner import PROMPT, PROMPT_MASK, make_refiner


def refiner_with_head(layers=1, trained=True):
    base, refiner = make_refiner(layers=layers)
    refiner.add_detection_head()
    if trained:  # give the hidden-state weights values so the head differs from the token probability
        torch.manual_seed(3)
        with torch.no_grad():
            refiner.detection_head.linear.weight.normal_(0, 0.3)
    return base, refiner.eval()


def test_a_fresh_head_scores_like_the_token_probability():
    _, refiner = refiner_with_head(trained=False)
    canvas = torch.tensor([[20, 21, 22, 23], [30, 31, 32, 33]])
    with torch.no_grad():
        logits, keep = refiner.forward_with_detection(PROMPT, PROMPT_MASK, canvas)
    probability = logits.softmax(-1).gather(-1, canvas[..., None]).squeeze(-1)
    assert torch.allclose(torch.sigmoid(keep), torch.sigmoid(probability.log()), atol=1e-5)


@pytest.mark.parametrize("layers", [0, 1])
def test_cached_scoring_matches_the_training_pass(layers):
    """What the sampler ranks a draft by (prompt cache) must be what training optimised (one full pass)."""
    _, refiner = refiner_with_head(layers=layers)
    canvas = torch.tensor([[20, 21, 22, 23], [30, 31, 32, 33]])
    with torch.no_grad():
        _, keep = refiner.forward_with_detection(PROMPT, PROMPT_MASK, canvas)
        state = refiner.encode_prompt(PROMPT, PROMPT_MASK)
        scored = score_draft(refiner, state, canvas)
        again = refiner.visible_confidence(state, canvas)  # the prompt cache must be left as it was
    assert torch.allclose(scored, torch.sigmoid(keep), atol=1e-5)
    assert torch.allclose(scored, again)
    probability = refiner(PROMPT, PROMPT_MASK, canvas).softmax(-1).gather(-1, canvas[..., None]).squeeze(-1)
    assert not torch.allclose(scored, probability, atol=1e-3)  # the head, not the token probability, answered


def test_without_a_head_scoring_is_the_token_probability():
    _, refiner = make_refiner(layers=1)
    canvas = torch.tensor([[20, 21, 22, 23], [30, 31, 32, 33]])
    with torch.no_grad():
        scored = score_draft(refiner, refiner.encode_prompt(PROMPT, PROMPT_MASK), canvas)
        probability = refiner(PROMPT, PROMPT_MASK, canvas).softmax(-1).gather(-1, canvas[..., None]).squeeze(-1)
    assert torch.allclose(scored, probability, atol=1e-5)


def test_head_saves_and_loads(tmp_path):
    base, refiner = refiner_with_head()
    refiner.save(tmp_path / "r")
    loaded = Refiner.load(tmp_path / "r", base)
    assert loaded.detection_head is not None
    assert torch.equal(loaded.detection_head.linear.weight, refiner.detection_head.linear.weight)
    # weights without the head under a config that announces one: refused with a clear error
    tensors = {k: v for k, v in load_file(str(tmp_path / "r" / WEIGHTS_NAME)).items() if not k.startswith("detection_head.")}
    save_file(tensors, str(tmp_path / "r" / WEIGHTS_NAME))
    with pytest.raises(HybridError, match="detection head"):
        Refiner.load(tmp_path / "r", base)


def test_detection_loss_rewards_telling_substitutes_apart():
    batch = collate([TokenisedExample([1], [3, 4, 5, 6])], pad_id=0, end_id=2, slack=0)
    logits = torch.zeros(1, 4, 10)
    substituted = torch.tensor([[False, True, False, False]])
    corruption = Corruption(batch.target_ids, torch.zeros_like(substituted), substituted)
    right = torch.where(substituted, -8.0, 8.0)  # keep-logits: low where a token was substituted
    good = loss_terms(logits, batch, corruption, 0.1, right, detection_weight=1.0)
    bad = loss_terms(logits, batch, corruption, 0.1, -right, detection_weight=1.0)
    off = loss_terms(logits, batch, corruption, 0.1, -right, detection_weight=0.0)
    assert good["detection"] < 0.01 < 5.0 < bad["detection"]
    assert bad["loss"] - off["loss"] == pytest.approx(float(bad["detection"]), rel=1e-5)
    assert "detection" not in off


def test_head_only_run_from_a_saved_refiner(tiny_model_dir, tmp_path):
    from hybrid.finetune.recipe import load_recipe
    from hybrid.finetune.trainer import run_recipe
    from hybrid.pipeline import HybridPipeline

    first = tmp_path / "first"
    run_recipe(load_recipe(TINY, tiny_overrides(tiny_model_dir, first, steps=2)))
    head = tmp_path / "head"
    extra = [f"model.init_refiner={first}", "objective.detection_weight=1.0", "train.train_lora=false", "train.learning_rate=0.05"]
    run_recipe(load_recipe(TINY, tiny_overrides(tiny_model_dir, head, steps=4) + extra))
    before, after = load_file(str(first / WEIGHTS_NAME)), load_file(str(head / WEIGHTS_NAME))
    assert set(after) - set(before) == {"detection_head.linear.weight", "detection_head.linear.bias"}
    assert all(torch.equal(before[k], after[k]) for k in before)  # LoRA, mask embedding and marker untouched
    assert after["detection_head.linear.weight"][0, :-1].abs().sum() > 0  # the head learned from hidden states
    log = [json.loads(line) for line in (head / "train_log.jsonl").read_text().splitlines()]
    assert all("detection" in r for r in log if "loss" in r)
    assert "detection_auc_token_probability" in json.loads((head / "validation.json").read_text())["validation"]
    pipe = HybridPipeline.from_pretrained(draft_model=str(tiny_model_dir), refiner=str(head))
    assert pipe.refiner.detection_head is not None
    assert pipe("Hello", max_new_tokens=6, refine_steps=2, select="confidence").steps_run >= 1


@pytest.mark.parametrize("overrides, message", [
    (["train.train_lora=false"], "nothing would train"),
    (["model.init_refiner=no/such/refiner"], "is not a refiner folder"),
])
def test_bad_detection_settings_fail_before_loading(overrides, message, monkeypatch):
    import hybrid.finetune.trainer as trainer

    monkeypatch.setattr(trainer, "load_causal_lm", lambda *a, **k: pytest.fail("a model was loaded for a bad recipe"))
    result = CliRunner().invoke(cli, ["finetune", str(TINY), *overrides])
    assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1
