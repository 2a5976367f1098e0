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
from hybrid.refiner import WEIGHTS_NAME, Refiner, read_tensors
from hybrid.refining.canvas import score_draft
from tiny import PROMPT, PROMPT_MASK, TINY, make_refiner, tiny_overrides


LAYOUTS = [((), 0), ((0, -1), 1)]  # the final state alone; both layers' outputs with a neighbour on each side


def refiner_with_head(layers=1, trained=True, layout=LAYOUTS[0]):
    base, refiner = make_refiner(layers=layers)
    refiner.add_detection_head(*layout)
    if trained:  # give the hidden-state weights values so the head differs from the token probability
        torch.manual_seed(3)
        with torch.no_grad():
            refiner.detection_head.linear.weight.normal_(0, 0.3)
    return base, refiner.eval()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_fresh_head_scores_like_the_token_probability(layout):
    _, refiner = refiner_with_head(trained=False, layout=layout)
    canvas = torch.tensor([[20, 21, 22, 23], [30, 31, 32, 33]])
    with torch.no_grad():
        output = refiner(PROMPT, PROMPT_MASK, canvas, detect=True)
    logits, keep = output.logits, output.keep_logits
    probability = logits.softmax(-1).gather(-1, canvas[..., None]).squeeze(-1)
    assert torch.allclose(torch.sigmoid(keep), torch.sigmoid(probability.log()), atol=1e-5)


@pytest.mark.parametrize("layers", [0, 1])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cached_scoring_matches_the_training_pass(layers, layout):
    """What the sampler ranks a draft by (prompt cache) must be what training optimised (one full pass)."""
    _, refiner = refiner_with_head(layers=layers, layout=layout)
    canvas = torch.tensor([[20, 21, 22, 23], [30, 31, 32, 33]])
    with torch.no_grad():
        keep = refiner(PROMPT, PROMPT_MASK, canvas, detect=True).keep_logits
        state = refiner.encode_prompt(PROMPT, PROMPT_MASK)
        scored = score_draft(refiner, state, canvas)
        again = refiner.visible_confidence(state, canvas)  # the prompt cache must be left as it was
    assert torch.allclose(scored, torch.sigmoid(keep), atol=1e-5)
    assert torch.allclose(scored, again)
    probability = refiner(PROMPT, PROMPT_MASK, canvas).logits.softmax(-1).gather(-1, canvas[..., None]).squeeze(-1)
    assert not torch.allclose(scored, probability, atol=1e-3)  # the head, not the token probability, answered


def test_a_head_saved_before_standardisation_still_loads(tmp_path):
    """Heads written before the shift/scale existed (the first shipped general refiner) read raw features."""
    base, refiner = refiner_with_head()
    refiner.save(tmp_path / "r")
    path = str(tmp_path / "r" / WEIGHTS_NAME)
    save_file({k: v for k, v in load_file(path).items() if not k.endswith(("shift", "scale"))}, path)
    head = Refiner.load(tmp_path / "r", base).detection_head
    assert torch.equal(head.scale, torch.ones(33)) and torch.equal(head.shift, torch.zeros(33))


def test_fast_dropout_matches_bernoulli_dropout_in_mean_and_spread():
    """The head's dropout draws one normal per position with the mean and variance that Bernoulli input dropout gives."""
    from hybrid.refiner import DetectionHead

    torch.manual_seed(0)
    head = DetectionHead(200, dropout=0.2)
    with torch.no_grad():
        head.linear.weight.normal_(0, 0.2)
    features = torch.randn(1, 1, 201).expand(1, 4000, 201)
    head.train()
    with torch.no_grad():
        fast = head(features)[0]
        kept = (torch.rand(4000, 201) >= 0.2).float() / 0.8
        bernoulli = (features[0] * kept) @ head.linear.weight[0] + head.linear.bias
        exact = head.eval()(features[0, :1])
    assert abs(float(fast.mean() - exact)) < 0.05 and abs(float(bernoulli.mean() - exact)) < 0.05
    assert float(fast.std()) == pytest.approx(float(bernoulli.std()), rel=0.08)
    assert float(fast.std()) > 0.5  # the spread is there at all


def test_bad_head_layers_are_refused():
    _, refiner = make_refiner(layers=1)
    with pytest.raises(HybridError, match="must lie in"):
        refiner.add_detection_head([5])


def test_without_a_head_scoring_is_the_token_probability():
    _, refiner = make_refiner(layers=1)
    canvas = torch.tensor([[20, 21, 22, 23], [30, 31, 32, 33]])
    with torch.no_grad():
        scored = score_draft(refiner, refiner.encode_prompt(PROMPT, PROMPT_MASK), canvas)
        probability = refiner(PROMPT, PROMPT_MASK, canvas).logits.softmax(-1).gather(-1, canvas[..., None]).squeeze(-1)
    assert torch.allclose(scored, probability, atol=1e-5)


def test_head_saves_and_loads(tmp_path):
    base, refiner = refiner_with_head(layout=LAYOUTS[1])
    refiner.detection_head.standardise_by(torch.full((195,), 0.5), torch.full((195,), 2.0))
    refiner.save(tmp_path / "r")
    loaded = Refiner.load(tmp_path / "r", base)
    assert loaded.has_detection_head([0, 1], 1)
    assert torch.equal(loaded.detection_head.linear.weight, refiner.detection_head.linear.weight)
    assert torch.equal(loaded.detection_head.scale, refiner.detection_head.scale)
    # a config naming another layout than the weights hold: refused with a clear error
    config = json.loads((tmp_path / "r" / "refiner_config.json").read_text())
    (tmp_path / "r" / "refiner_config.json").write_text(json.dumps(config | {"detection_neighbours": 0}))
    with pytest.raises(HybridError, match="does not match the layout"):
        Refiner.load(tmp_path / "r", base)
    (tmp_path / "r" / "refiner_config.json").write_text(json.dumps(config))
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


HEAD_ONLY = ["objective.detection_weight=1.0", "objective.detection_layers=[0,-1]", "objective.detection_neighbours=1",
             "train.train_lora=false", "train.learning_rate=0.05", "train.head_epochs=5"]


def test_head_only_run_from_a_saved_refiner(tiny_model_dir, tmp_path):
    """Head-only training encodes windows once, fits the head on them, leaves the LoRA alone and loads into the pipeline."""
    from hybrid.finetune.recipe import load_recipe
    from hybrid.finetune.methods import run_recipe
    from hybrid.pipeline import HybridPipeline

    first = tmp_path / "first"
    run_recipe(load_recipe(TINY, tiny_overrides(tiny_model_dir, first, steps=2)))
    head = tmp_path / "head"
    run_recipe(load_recipe(TINY, tiny_overrides(tiny_model_dir, head, steps=20) + [f"model.init_refiner={first}", *HEAD_ONLY]))
    before, after = load_file(str(first / WEIGHTS_NAME)), load_file(str(head / WEIGHTS_NAME))
    assert set(after) - set(before) == {f"detection_head.{k}" for k in ("linear.weight", "linear.bias", "shift", "scale")}
    assert all(torch.equal(before[k], after[k]) for k in before)  # LoRA, mask embedding and marker untouched
    weight = after["detection_head.linear.weight"][0]
    block = weight.numel() // 3  # own position, left and right neighbours: two states of 32 and a log-prob each
    assert block == 2 * 32 + 1 and weight[: block - 1].abs().sum() > 0 and weight[block:].abs().sum() > 0
    assert after["detection_head.scale"].ne(1).any()  # the standardisation was fitted
    log = [json.loads(line) for line in (head / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "positions" in r] == list(range(1, 21))
    epochs = [r for r in log if "epoch" in r]
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4, 5] and all("held_out_auc" in r for r in epochs)
    assert sum(r.get("kept", False) for r in epochs) == 1
    figures = json.loads((head / "validation.json").read_text())["validation"]
    assert {"detection_auc_token_probability", "detection_auc_random", "detection_auc_random_token_probability"} <= set(figures)
    assert not (head / "head_features").exists()  # the encoded features are dropped once the head is written
    config = json.loads((head / "refiner_config.json").read_text())
    assert config["detection_layers"] == [0, 1] and config["detection_neighbours"] == 1
    pipe = HybridPipeline.from_pretrained(draft_model=str(tiny_model_dir), refiner=str(head))
    assert pipe.refiner.has_detection_head([0, 1], 1)
    assert pipe("Hello", max_new_tokens=6, refine_steps=2, select="confidence").steps_run >= 1
    # fitting again from the result (which already has a head of this layout) starts from a fresh head: same head
    again = tmp_path / "again"
    run_recipe(load_recipe(TINY, tiny_overrides(tiny_model_dir, again, steps=20) + [f"model.init_refiner={head}", *HEAD_ONLY]))
    assert all(torch.equal(after[k], v) for k, v in load_file(str(again / WEIGHTS_NAME)).items())


def test_interrupted_head_fit_resumes_to_the_same_head(tiny_model_dir, tmp_path, monkeypatch):
    import hybrid.finetune.head_training as head_fit
    from hybrid.finetune.recipe import load_recipe
    from hybrid.finetune.head_training import HeadTraining
    from hybrid.finetune.methods import run_recipe
    from hybrid.finetune.training import TrainingInterrupted

    first = tmp_path / "first"
    run_recipe(load_recipe(TINY, tiny_overrides(tiny_model_dir, first, steps=2)))
    overrides = lambda out: tiny_overrides(tiny_model_dir, out, steps=6) + [f"model.init_refiner={first}", *HEAD_ONLY]
    run_recipe(load_recipe(TINY, overrides(tmp_path / "straight")))
    encode, calls = head_fit.encode_batch, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 4:  # Ctrl-C while encoding the fourth batch: three are saved, on no checkpoint boundary
            raise KeyboardInterrupt
        return encode(*args)

    monkeypatch.setattr(head_fit, "encode_batch", interrupted)
    with pytest.raises(TrainingInterrupted, match="3 steps"):
        run_recipe(load_recipe(TINY, overrides(tmp_path / "resumed")))
    monkeypatch.setattr(head_fit, "encode_batch", encode)
    trainer = HeadTraining(load_recipe(TINY, overrides(tmp_path / "resumed")), resume=True)
    trainer.setup()
    assert trainer.step == 3
    trainer.cleanup(trainer.train())
    a, b = (read_tensors(tmp_path / name) for name in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a finished fit dropped its features: resuming it with more steps is refused instead of fitting on half the data
    trainer = HeadTraining(load_recipe(TINY, overrides(tmp_path / "resumed") + ["train.steps=8"]), resume=True)
    trainer.setup()
    with pytest.raises(HybridError, match="start a new run"):
        trainer.train()


@pytest.mark.parametrize("overrides, message", [
    (["train.train_lora=false"], "nothing would train"),
    (["model.init_refiner=no/such/refiner"], "is not a refiner folder"),
])
def test_bad_detection_settings_fail_before_loading(overrides, message, monkeypatch):
    import hybrid.finetune.training as trainer

    monkeypatch.setattr(trainer, "load_causal_lm", lambda *a, **k: pytest.fail("a model was loaded for a bad recipe"))
    result = CliRunner().invoke(cli, ["finetune", str(TINY), *overrides])
    assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1


def test_head_trained_with_the_lora_gets_its_standardisation_from_the_first_batch(tiny_model_dir, tmp_path):
    from hybrid.finetune.recipe import load_recipe
    from hybrid.finetune.methods import run_recipe

    out = tmp_path / "joint"
    extra = ["objective.detection_weight=1.0", "objective.detection_layers=[0,-1]", "objective.detection_neighbours=1"]
    run_recipe(load_recipe(TINY, tiny_overrides(tiny_model_dir, out, steps=2) + extra))
    tensors = read_tensors(out)
    assert tensors["detection_head.scale"].ne(1).any() and tensors["detection_head.shift"].ne(0).any()
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in tensors.items())  # the LoRA trained too
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert all("detection" in r for r in log if "loss" in r)


def test_validation_scores_random_substitutes_with_the_head():
    """The blatant-error figure ranks the same positions by the head and by the token probability: a fresh head
    (which ranks like the token probability) scores the same AUC, a head that inverts it the mirror image."""
    from hybrid.finetune.validation import validate_refiner

    _, refiner = refiner_with_head(trained=False)
    examples = [TokenisedExample([1, 5 + i, 6], list(range(10 + i, 26 + i))) for i in range(8)]
    fresh = validate_refiner(refiner, examples, pad_id=0, end_id=2, repair_steps=1)
    assert 0.0 < fresh.detection_auc_random_token_probability < 1.0
    assert fresh.detection_auc_random == pytest.approx(fresh.detection_auc_random_token_probability)
    with torch.no_grad():
        refiner.detection_head.linear.weight.neg_()
    inverted = validate_refiner(refiner, examples, pad_id=0, end_id=2, repair_steps=1)
    assert inverted.detection_auc_random == pytest.approx(1 - fresh.detection_auc_random_token_probability)
    assert inverted.detection_auc_random_token_probability == fresh.detection_auc_random_token_probability


def test_product_accuracy_keeps_each_window_for_pairing():
    """Per-window accuracies weighted by their masked positions give back the pooled figure, and a second run on the same
    examples draws the same positions (what pairs two refiners window by window)."""
    from hybrid.finetune.validation import product_accuracy

    _, refiner = refiner_with_head(trained=False)
    examples = [TokenisedExample([1, 5 + i, 6], list(range(10 + i, 30 + i))) for i in range(10)]
    first = product_accuracy(refiner, examples, pad_id=0, end_id=2, batch_size=4)
    again = product_accuracy(refiner, examples, pad_id=0, end_id=2, batch_size=4)
    for figures, repeat in zip(first, again):
        assert len(figures.windows) == len(examples) and figures.windows == repeat.windows
        pooled = figures.combined * figures.positions
        assert pooled == pytest.approx(sum(a * n for a, n in zip(figures.windows, _masked_per_window(refiner, examples, figures.rate)) if a is not None))


def _masked_per_window(refiner, examples, rate):
    """How many positions product_accuracy masks in each example at `rate` (its own seeded draws)."""
    from hybrid.finetune.objective import collate
    from hybrid.finetune.validation import _draw_positions, _product_counters

    generators, _ = _product_counters(1234)
    counts = []
    for start in range(0, len(examples), 4):
        batch = collate(examples[start : start + 4], 0, 2, slack=0)
        for r, generator in generators.items():
            chosen = _draw_positions(batch.valid, r, generator)
            if r == rate:
                counts += chosen.sum(1).tolist()
    return counts
