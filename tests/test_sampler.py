import pytest
import torch

from hybrid.refining.canvas import build_canvas, num_to_mask, score_draft
from hybrid.config import SamplerConfig
from hybrid.errors import HybridError
from hybrid.refining.sampler import refine

EOS, MASK, V = 0, 11, 12  # real tokens are 1..10; the mask id is inside V on purpose (see Oracle)


def target_for(prompt, width):
    """The oracle's answer: prompt row = (seed, length); tokens in 1..10, then EOS."""
    seed, length = prompt[:, :1], prompt[:, 1:2]
    pos = torch.arange(width)
    return torch.where(pos < length, 1 + (seed * 7 + pos * 3) % 10, EOS)


class Oracle:
    """Stand-in denoiser: puts logit 3..7 (position-dependent) on the target token, 0 elsewhere, and a huge
    logit on the mask token, which the sampler must ignore. Ignores the canvas, so rows are independent."""

    mask_token_id = MASK

    def __init__(self, flat=()):
        self.calls = 0
        self.flat = list(flat)  # positions where the oracle is unsure (target still the argmax, p < 0.5)

    def encode_prompt(self, prompt_ids, prompt_attention_mask):
        return prompt_ids

    def canvas_logits(self, prompt_state, canvas_ids, need=None):
        self.calls += 1
        batch, width = canvas_ids.shape
        target = target_for(prompt_state, width)
        sharpness = 3.0 + (prompt_state[:, :1] + torch.arange(width)) % 5
        sharpness[:, self.flat] = 0.5
        logits = torch.zeros(batch, width, V).scatter_(-1, target.unsqueeze(-1), sharpness.unsqueeze(-1).float())
        logits[..., MASK] = 50.0
        return logits


def setup(seed=3, length=10, slack=4):
    prompt = torch.tensor([[seed, length]])
    oracle = Oracle()
    return oracle, oracle.encode_prompt(prompt, torch.ones_like(prompt)), target_for(prompt, length + slack)


def corrupt(ids, positions):
    ids = ids.clone()
    ids[:, positions] = 1 + ids[:, positions] % 10  # a different real token
    return ids


@pytest.mark.parametrize("schedule", ["linear", "cosine", "loglinear"])
@pytest.mark.parametrize("steps", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("edit", [None, 0.5])
def test_reconstructs_from_all_masks(schedule, steps, edit):
    oracle, state, target = setup()
    canvas = torch.full_like(target, MASK)
    out = refine(oracle, state, canvas, SamplerConfig(steps=steps, schedule=schedule, edit_threshold=edit))
    assert torch.equal(out.canvas, target)
    assert 1 <= out.steps_run <= steps and oracle.calls == out.steps_run
    assert sum(out.committed_per_step) == target.numel() and sum(out.edits_per_step) == 0
    assert torch.equal(canvas, torch.full_like(target, MASK))  # input untouched


def test_commits_most_confident_first():
    oracle, state, target = setup()
    width = target.shape[1]
    config = SamplerConfig(steps=width, schedule="linear", trace=True)
    out = refine(oracle, state, torch.full_like(target, MASK), config)
    assert out.committed_per_step == [1] * width
    entries = [step[0][0] for step in out.trace]
    confidences = [e.confidence for e in entries]
    assert confidences == sorted(confidences, reverse=True)
    assert sorted(e.position for e in entries) == list(range(width))
    assert all(e.old_token_id == MASK and e.new_token_id == int(target[0, e.position]) for e in entries)


def hybrid_case(edit, strength=0.3, steps=4, trace=False):
    oracle, state, target = setup(length=10)
    bad = [2, 7]
    draft = corrupt(target[:, :10], bad)
    logprobs = -torch.arange(1.0, 11.0).unsqueeze(0)  # lowest at the end...
    logprobs[0, bad] = 0.0  # ...and the corrupted tokens look certain, so they are never re-masked
    config = SamplerConfig(steps=steps, strength=strength, edit_threshold=edit, trace=trace)
    canvas, noise = build_canvas(draft, logprobs, [10], config, EOS, MASK, None)
    assert not noise[0, bad].any()
    return oracle, refine(oracle, state, canvas, config), target, draft, noise, bad


def test_editing_restores_corrupted_tokens():
    oracle, out, target, draft, noise, bad = hybrid_case(edit=0.5)
    assert torch.equal(out.canvas, target)
    assert sum(out.edits_per_step) == len(bad)
    changed = (out.canvas[:, :10] != draft).nonzero()[:, 1].tolist()
    assert changed == bad  # masked positions were re-filled with the draft's (correct) tokens


def test_without_editing_corrupted_tokens_stay():
    oracle, out, target, draft, noise, bad = hybrid_case(edit=None)
    assert torch.equal(out.canvas[:, :10], draft)
    assert torch.equal(out.canvas[:, 10:], target[:, 10:])
    assert sum(out.edits_per_step) == 0


def test_editing_needs_a_later_step():
    oracle, out, target, draft, noise, bad = hybrid_case(edit=0.5, steps=1)
    assert torch.equal(out.canvas[:, :10], draft)  # nothing is re-masked at the final step


def test_editing_keeps_unsure_tokens_that_are_still_the_argmax():
    oracle, state, target = setup()
    oracle.flat = [1, 4]
    out = refine(oracle, state, target, SamplerConfig(steps=4, edit_threshold=0.5))
    assert out.edits_per_step == [0] and torch.equal(out.canvas, target)


def test_editing_respects_editable():
    oracle, state, target = setup()
    draft = corrupt(target, [2, 7])
    editable = torch.ones_like(draft, dtype=torch.bool)
    editable[0, 2] = False
    out = refine(oracle, state, draft, SamplerConfig(steps=4, edit_threshold=0.5), editable=editable)
    assert (out.canvas != target).nonzero()[:, 1].tolist() == [2]


def test_mask_token_is_never_predicted():
    oracle, state, target = setup()
    out = refine(oracle, state, torch.full_like(target, MASK), SamplerConfig(steps=3, temperature=2.0))
    assert not (out.canvas == MASK).any()


def test_trace_records_commits_and_edits():
    oracle, out, target, draft, noise, bad = hybrid_case(edit=0.5, trace=True)
    entries = [e for step in out.trace for e in step[0]]
    edits = [e for e in entries if e.new_token_id == MASK]
    assert sorted(e.position for e in edits) == bad
    assert all(e.old_token_id == int(draft[0, e.position]) and e.confidence < 0.5 for e in edits)
    assert len(entries) - len(edits) == sum(out.committed_per_step) == int(noise.sum()) + len(bad)


def test_strength_zero_leaves_draft_untouched():
    oracle, state, target = setup()
    draft = corrupt(target[:, :10], [4])
    config = SamplerConfig(steps=4, strength=0.0, slack=0)
    canvas, noise = build_canvas(draft, torch.zeros(1, 10), [10], config, EOS, MASK, None)
    assert torch.equal(canvas, draft) and not noise.any()
    out = refine(oracle, state, canvas, config)
    assert torch.equal(out.canvas, draft) and out.steps_run == 0 and oracle.calls == 0


@pytest.mark.parametrize("strength", [0.1, 0.26, 0.5, 0.74, 0.9, 1.0])
@pytest.mark.parametrize("select", ["logprob", "confidence", "random"])
def test_masked_count_slack_and_padding(strength, select):
    draft = torch.arange(1, 21).remainder(10).add(1).reshape(2, 10)
    config = SamplerConfig(strength=strength, select=select, slack=3)
    canvas, noise = build_canvas(draft, torch.randn(2, 10), torch.tensor([10, 6]), config, EOS, MASK,
                                 torch.Generator().manual_seed(0), scores=torch.rand(2, 10))
    assert canvas.shape == (2, 13) and torch.equal(canvas == MASK, noise)
    for row, length in enumerate([10, 6]):
        assert int(noise[row, :length].sum()) == round(strength * length) == num_to_mask(strength, length)
        assert noise[row, length:length + 3].all()
        assert (canvas[row, length + 3:] == EOS).all()
        kept = ~noise[row, :length]
        assert torch.equal(canvas[row, :length][kept], draft[row, :length][kept])


def test_select_logprob_picks_lowest():
    logprobs = torch.tensor([[-0.1, -5.0, -0.2, -3.0, -0.3, -4.0, -0.4, -0.5]])
    config = SamplerConfig(strength=0.375, select="logprob", slack=0)
    _, noise = build_canvas(torch.ones(1, 8, dtype=torch.long), logprobs, [8], config, EOS, MASK)
    assert noise[0].nonzero().flatten().tolist() == [1, 3, 5]


def test_select_confidence_picks_lowest_refiner_scores():
    oracle, state, target = setup()
    bad = [1, 6]
    draft = corrupt(target[:, :10], bad)
    scores = score_draft(oracle, state, draft)
    assert scores.shape == (1, 10) and (scores[0, bad] < 0.1).all()
    config = SamplerConfig(strength=0.2, select="confidence", slack=0)
    _, noise = build_canvas(draft, None, [10], config, EOS, MASK, scores=scores)
    assert noise[0].nonzero().flatten().tolist() == bad
    with pytest.raises(HybridError):
        build_canvas(draft, None, [10], config, EOS, MASK)
    with pytest.raises(HybridError):
        build_canvas(draft, None, [10], SamplerConfig(select="logprob"), EOS, MASK)


def test_same_seed_same_output_when_sampling():
    oracle, state, target = setup(length=24)
    draft = torch.randint(1, 11, (1, 24), generator=torch.Generator().manual_seed(1))
    config = SamplerConfig(steps=6, strength=1.0, select="random", temperature=1.0)

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        canvas, _ = build_canvas(draft, None, [24], config, EOS, MASK, g)
        return refine(oracle, state, canvas, config, g).canvas

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))
    assert not (run(0) == MASK).any()


def test_a_draft_that_may_not_grow_gets_no_slack():
    """`grows` False (a verified draft cut at its limit): no masks past that draft, eos padding there in a batch with a
    row that may grow, and no slack columns at all where no row may grow."""
    draft = torch.arange(1, 11).repeat(2, 1)
    config = SamplerConfig(strength=0.3, slack=3)
    canvas, noise = build_canvas(draft, torch.zeros(2, 10), [10, 6], config, EOS, MASK, grows=[False, True])
    assert canvas.shape == (2, 13) and (canvas[0, 10:] == EOS).all() and not noise[0, 10:].any()
    assert (canvas[1, 6:9] == MASK).all() and noise[1, 6:9].all() and (canvas[1, 9:] == EOS).all()
    alone, noise = build_canvas(draft[:1], torch.zeros(1, 10), [10], config, EOS, MASK, grows=[False])
    assert alone.shape == (1, 10) and int(noise.sum()) == num_to_mask(0.3, 10)


def test_batch_equals_one_by_one():
    prompts = torch.tensor([[1, 12], [2, 7], [3, 9]])
    lengths = [12, 7, 9]
    oracle = Oracle()
    draft = corrupt(target_for(prompts, 12), [3, 5])
    draft[1, 7:], draft[2, 9:] = EOS, EOS
    logprobs = -torch.rand(3, 12, generator=torch.Generator().manual_seed(0))
    config = SamplerConfig(steps=4, strength=0.3, edit_threshold=0.5, slack=3)
    canvas, noise = build_canvas(draft, logprobs, lengths, config, EOS, MASK)
    editable = torch.arange(canvas.shape[1]) < torch.tensor(lengths).unsqueeze(1) + config.slack
    batch = refine(oracle, prompts, canvas, config, editable=editable)
    assert (batch.canvas[~editable] == EOS).all()
    for b, n in enumerate(lengths):
        one, _ = build_canvas(draft[b:b + 1, :n], logprobs[b:b + 1, :n], [n], config, EOS, MASK)
        single = refine(oracle, prompts[b:b + 1], one, config)
        assert torch.equal(single.canvas[0], batch.canvas[b, :n + config.slack])
        assert torch.equal(single.canvas, target_for(prompts[b:b + 1], n + config.slack))


def test_early_stop_when_oracle_agrees():
    oracle, state, target = setup()
    out = refine(oracle, state, target, SamplerConfig(steps=8, edit_threshold=0.5))
    assert out.steps_run == 1 and oracle.calls == 1 and torch.equal(out.canvas, target)
    assert out.committed_per_step == [0] and out.edits_per_step == [0]
    oracle.calls = 0
    out = refine(oracle, state, target, SamplerConfig(steps=8))  # editing off: nothing to do at all
    assert out.steps_run == 0 and oracle.calls == 0


def test_zero_steps_is_draft_only():
    oracle, state, target = setup()
    canvas = target.clone()
    canvas[0, -4:] = MASK
    out = refine(oracle, state, canvas, SamplerConfig(steps=0))
    assert torch.equal(out.canvas, canvas) and out.steps_run == 0 and oracle.calls == 0


@pytest.mark.parametrize(
    "kwargs",
    [dict(strength=0.0), dict(strength=1.5), dict(strength=-0.1), dict(steps=-1), dict(steps=257),
     dict(steps=2.5), dict(select="best"), dict(schedule="sqrt"), dict(slack=-1), dict(edit_threshold=1.0),
     dict(temperature=-1.0), dict(strength="0.5"), dict(verify_weight="x"), dict(ground_kinds=("place",))],
)
def test_validate_rejects_bad_config(kwargs):
    with pytest.raises(HybridError):
        SamplerConfig(**kwargs).validate()


def test_validate_accepts_defaults_and_edges():
    SamplerConfig().validate()
    SamplerConfig(steps=0, strength=1.0).validate()
    SamplerConfig(steps=256, strength=1e-3, select="random", schedule="loglinear", edit_threshold=0.1).validate()


def test_unsure_refiner_puts_the_draft_token_back():
    """With min_change_confidence, a re-noised draft token survives where the refiner is unsure, not elsewhere."""
    prompt = torch.tensor([[3, 10]])
    oracle = Oracle(flat=[2, 5])  # unsure (p < 0.5) at positions 2 and 5
    state = oracle.encode_prompt(prompt, torch.ones_like(prompt))
    target = target_for(prompt, 10)
    draft = corrupt(target, [2, 5, 7])  # the draft is wrong at 2, 5 and 7
    canvas = draft.clone()
    canvas[:, [2, 5, 7]] = MASK
    anchor = draft.clone()
    sure = refine(oracle, state, canvas, SamplerConfig(steps=4, min_change_confidence=0.0), anchor=anchor).canvas
    guarded = refine(oracle, state, canvas, SamplerConfig(steps=4, min_change_confidence=0.5), anchor=anchor).canvas
    assert torch.equal(sure, target)  # off: the refiner's choice everywhere
    assert guarded[0, 7] == target[0, 7]  # a confident fix is taken
    assert guarded[0, 2] == draft[0, 2] and guarded[0, 5] == draft[0, 5]  # unsure: the draft token is back
    no_anchor = anchor.clone()
    no_anchor[:, 2] = -1  # a slack-like position has no draft token: the refiner's choice stays
    assert refine(oracle, state, canvas, SamplerConfig(steps=4, min_change_confidence=0.5), anchor=no_anchor).canvas[0, 2] == target[0, 2]


def test_guarded_refiner_cannot_end_the_text_inside_the_draft():
    prompt = torch.tensor([[3, 6]])  # the oracle's target ends after 6 tokens (EOS from position 6 on)
    oracle = Oracle()
    state = oracle.encode_prompt(prompt, torch.ones_like(prompt))
    draft = target_for(torch.tensor([[3, 9]]), 9)  # a longer draft: the oracle wants EOS at 6, 7, 8
    canvas = draft.clone()
    canvas[:, [6, 7]] = MASK
    config = SamplerConfig(steps=2, min_change_confidence=0.1)
    free = refine(oracle, state, canvas, config, anchor=draft).canvas
    guarded = refine(oracle, state, canvas, config, anchor=draft, end_token_id=EOS).canvas
    assert free[0, 6] == EOS
    assert torch.equal(guarded[0, [6, 7]], draft[0, [6, 7]])


class Noisy:
    """A denoiser whose logits depend on the canvas (random but fixed per canvas), so every step's proposal differs.
    With `poison`, the slots the sampler did not ask for (`need`) hold NaN: any read of them would show."""

    mask_token_id = MASK

    def __init__(self, poison=False):
        self.poison = poison

    def encode_prompt(self, prompt_ids, prompt_attention_mask):
        return None

    def canvas_logits(self, prompt_state, canvas_ids, need=None):
        generator = torch.Generator().manual_seed(int(canvas_ids.sum()))
        logits = torch.randn(*canvas_ids.shape, V, generator=generator) * 3
        if self.poison and need is not None:
            logits[~need] = float("nan")
        return logits


@pytest.mark.parametrize("temperature, edit, trace", [(0.0, None, False), (1.0, None, False), (0.0, None, True), (1.0, 0.3, True)])
def test_only_the_slots_the_step_asks_for_are_read(temperature, edit, trace):
    """The loop asks the denoiser for the slots it needs (masked ones, and the editable visible ones with editing) and
    does its vocabulary-wide work on those rows alone: NaN elsewhere changes nothing, with a drafter prior, an anchor
    and restricted slots, greedy or sampled, with editing and the trace."""
    torch.manual_seed(0)
    draft = torch.randint(1, 11, (2, 9))
    canvas = draft.clone()
    canvas[0, [1, 4, 5, 8]] = MASK
    canvas[1, [0, 2, 3]] = MASK
    anchor = torch.where(canvas == MASK, draft, torch.full_like(draft, -1))
    prior = torch.randn(2, 9, V).log_softmax(-1)
    allowed = torch.rand(2, V) > 0.3
    restricted = torch.zeros_like(canvas, dtype=torch.bool)
    restricted[0, 4] = restricted[1, 2] = True
    outputs = []
    for poison in (True, False):
        config = SamplerConfig(steps=3, temperature=temperature, trace=trace, verify=True, edit_threshold=edit)
        out = refine(Noisy(poison), None, canvas, config, torch.Generator().manual_seed(5), anchor=anchor, end_token_id=EOS, prior=prior,
                     allowed=allowed, restricted=restricted)
        outputs.append(out)
    fast, full = outputs
    assert torch.equal(fast.canvas, full.canvas) and fast.committed_per_step == full.committed_per_step
    assert torch.allclose(fast.refiner_gain, full.refiner_gain, atol=1e-6)
    assert fast.edits_per_step == full.edits_per_step and fast.trace == full.trace


def test_sequence_settings_are_kept_as_tuples_however_they_are_given():
    from dataclasses import replace

    from hybrid.config import DraftConfig, configs_from

    draft, refine = configs_from({"stop": ["\n\n"], "ground_kinds": iter(["number"])})
    assert draft.stop == ("\n\n",) and refine.ground_kinds == ("number",)
    assert replace(DraftConfig(), stop=["x", "y"]).stop == ("x", "y") and SamplerConfig(ground_kinds=["entity"]).ground_kinds == ("entity",)
