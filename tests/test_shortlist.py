"""The refine step's shortlist (hybrid.refining.shortlist): the product taken over the drafter's likeliest tokens of each slot."""

import pytest
import torch

from hybrid.config import SamplerConfig
from hybrid.refining.sampler import refine
from hybrid.refining.shortlist import build_shortlist
from test_sampler import EOS, MASK, V, Noisy, Oracle, setup
from tiny import PROMPT, PROMPT_MASK, make_refiner


def _canvas_and_prior(seed=0):
    """Two rows of 9 slots with masks, their anchors, and a drafter prior that has no distribution at two slack slots."""
    torch.manual_seed(seed)
    draft = torch.randint(1, 11, (2, 9))
    canvas = draft.clone()
    canvas[0, [1, 4, 5, 7, 8]] = MASK
    canvas[1, [0, 2, 3, 8]] = MASK
    anchor = torch.where(canvas == MASK, draft, torch.full_like(draft, -1))
    anchor[0, 7:] = anchor[1, 8] = -1  # the slack past each text
    prior = torch.randn(2, 9, V).log_softmax(-1)
    prior[0, 8] = prior[1, 8] = 0.0  # no drafter distribution: the whole vocabulary there
    return canvas, anchor, prior


@pytest.mark.parametrize("edit, trace, restrict", [(None, False, False), (None, True, True), (0.3, True, False)])
def test_a_shortlist_of_the_whole_vocabulary_changes_nothing(edit, trace, restrict):
    """Listing every token gives the whole vocabulary's proposals, gains, edits and trace, at slots with a drafter
    prior and at slots without one, with and without restricted slots."""
    canvas, anchor, prior = _canvas_and_prior()
    allowed = restricted = None
    if restrict:
        allowed, restricted = torch.rand(2, V) > 0.3, torch.zeros_like(canvas, dtype=torch.bool)
        restricted[0, 4] = restricted[1, 2] = True
    outputs = []
    for size in (0, V):
        config = SamplerConfig(steps=3, trace=trace, edit_threshold=edit, min_change_confidence=0.0, shortlist=size)
        outputs.append(refine(Noisy(), None, canvas, config, anchor=anchor, end_token_id=EOS, prior=prior, allowed=allowed,
                              restricted=restricted))
    whole, listed = outputs
    assert torch.equal(whole.canvas, listed.canvas) and whole.committed_per_step == listed.committed_per_step
    assert whole.edits_per_step == listed.edits_per_step
    assert torch.allclose(whole.refiner_gain, listed.refiner_gain, atol=1e-5)
    if trace:
        assert [[[e[:3] for e in row] for row in step] for step in whole.trace] == [[[e[:3] for e in row] for row in step] for step in listed.trace]


def test_slots_without_a_drafter_prior_keep_the_whole_vocabulary():
    """Where the drafter has no distribution, a shortlist of 2 proposes what the whole vocabulary does, with the same
    confidence and gain (one step: both runs see the same canvas)."""
    canvas, anchor, prior = _canvas_and_prior()
    runs = [refine(Noisy(), None, canvas, SamplerConfig(steps=1, trace=True, min_change_confidence=0.0, shortlist=size), anchor=anchor,
                   end_token_id=EOS, prior=prior) for size in (0, 2)]
    whole, listed = runs
    confidence = [{(row, e.position): e for row, entries in enumerate(run.trace[0]) for e in entries} for run in runs]
    for row in (0, 1):
        assert listed.canvas[row, 8] == whole.canvas[row, 8]
        assert confidence[1][row, 8].confidence == pytest.approx(confidence[0][row, 8].confidence, rel=1e-5)
        assert listed.refiner_gain[row, 8] == pytest.approx(float(whole.refiner_gain[row, 8]), abs=1e-5)
    assert not torch.equal(listed.canvas, whole.canvas)  # elsewhere the shortlist of 2 does change proposals


def test_a_token_off_the_shortlist_is_never_proposed():
    """The oracle (weighted 5) is sure of its target; the drafter ranks that target third, so a shortlist of 2 proposes
    one of the drafter's 2 (or the draft's own token) instead, and the whole vocabulary proposes the target."""
    _, state, target = setup()
    oracle = Oracle()
    oracle.residual_weight = 5.0
    canvas = torch.full_like(target, MASK)
    anchor = torch.where(target > 0, 1 + target % 10, torch.full_like(target, -1))  # a draft that is wrong everywhere
    prior = torch.full((1, target.shape[1], V), -20.0)
    favourites = torch.stack([1 + (target + 1) % 10, 1 + (target + 2) % 10], -1)
    prior = prior.scatter(-1, target[..., None], -8.0).scatter(-1, favourites, -0.7).log_softmax(-1)
    config = SamplerConfig(steps=4, min_change_confidence=0.0, verify=False)
    whole = refine(oracle, state, canvas, config, anchor=anchor, end_token_id=EOS, prior=prior).canvas
    listed = refine(oracle, state, canvas, SamplerConfig(steps=4, min_change_confidence=0.0, verify=False, shortlist=2), anchor=anchor,
                    end_token_id=EOS, prior=prior).canvas
    assert torch.equal(whole, target)
    allowed = torch.cat([favourites, anchor.clamp(min=0)[..., None]], -1)
    assert (listed[..., None] == allowed).any(-1).all() and not torch.equal(listed, target)


def test_restricted_slots_take_the_whole_vocabulary():
    """Grounded refills draw from the source's tokens, which a list may miss entirely: with `allowed` given the
    shortlist is not used (a list of 1 proposes as the whole vocabulary does)."""
    canvas, anchor, prior = _canvas_and_prior()
    allowed, restricted = torch.rand(2, V) > 0.6, torch.zeros_like(canvas, dtype=torch.bool)
    restricted[0, [1, 4]] = restricted[1, [0, 2]] = True
    runs = [refine(Noisy(), None, canvas, SamplerConfig(steps=3, min_change_confidence=0.0, shortlist=size), anchor=anchor,
                   end_token_id=EOS, prior=prior, allowed=allowed, restricted=restricted) for size in (0, 1)]
    assert torch.equal(runs[0].canvas, runs[1].canvas)


def test_build_shortlist_lists_the_kept_token_once():
    prior = torch.tensor([[[-0.1, -3.0, -5.0, -9.0], [0.0, 0.0, 0.0, 0.0]]])
    shortlist = build_shortlist(prior, 2, keep=torch.tensor([[0, 3]]))
    assert shortlist.ids[0, 0].tolist() == [0, 1, -1]  # token 0 is listed already
    assert shortlist.whole.tolist() == [[False, True]]
    assert shortlist.prior[0, 0, :2].tolist() == pytest.approx([-0.1, -3.0])


@pytest.mark.parametrize("layers", [0, 1])
@pytest.mark.parametrize("cache_refresh", [0, 4])
def test_listed_logits_are_the_needed_logits_of_the_listed_tokens(layers, cache_refresh):
    """The refiner's shortlist path gives the packed path's logits at the listed tokens, and its whole rows (slot 0, the
    prompt's prediction, among them), on a first pass and on the next one."""
    _, refiner = make_refiner(layers=layers)
    refiner.cache_refresh = cache_refresh
    torch.manual_seed(0)
    canvas = torch.randint(3, 100, (2, 7))
    canvas[0, [0, 2, 5]] = canvas[1, [1, 3]] = refiner.mask_token_id
    need = canvas == refiner.mask_token_id
    need[1, 0] = True
    ids = torch.randint(0, 100, (int(need.sum()), 5))
    ids[0, 4] = ids[3, 1] = -1
    whole = torch.zeros(len(ids), dtype=torch.bool)
    whole[[0, 2]] = True  # row 0 is slot 0 of the first text
    with torch.no_grad():
        state, listed_state = refiner.encode_prompt(PROMPT, PROMPT_MASK), refiner.encode_prompt(PROMPT, PROMPT_MASK)
        for rule in (whole, lambda listed: listed[:, 0] > listed[:, 1]):
            packed = refiner.needed_logits(state, canvas, need)
            listed, full, marked = refiner.listed_logits(listed_state, canvas, need, ids, rule)
            expected = packed.gather(1, ids.clamp(min=0))
            assert torch.equal(marked, whole if torch.is_tensor(rule) else expected[:, 0] > expected[:, 1]) and marked.any()
            assert torch.allclose(listed, expected, atol=1e-5) and torch.allclose(full, packed[marked], atol=1e-6)


def test_every_change_the_guard_lets_through_is_the_whole_vocabularys():
    """A list's normaliser misses the mass off it, so its confidences run high; a slot whose listed proposal would
    replace its draft token is scored over the whole vocabulary instead. With a guard and a list of 2, each change is
    the whole vocabulary's change, at its confidence (one step: both runs see the same canvas)."""
    canvas, anchor, prior = _canvas_and_prior(seed=1)
    canvas = torch.where(anchor >= 0, MASK, canvas)
    runs = [refine(Noisy(), None, canvas, SamplerConfig(steps=1, trace=True, min_change_confidence=0.3, shortlist=size),
                   anchor=anchor, end_token_id=EOS, prior=prior) for size in (0, 2)]
    changes = [{(row, e.position): (e.new_token_id, round(e.confidence, 5)) for row, entries in enumerate(run.trace[0])
                for e in entries if anchor[row, e.position] >= 0 and e.new_token_id != anchor[row, e.position]} for run in runs]
    assert changes[1] and set(changes[1].items()) <= set(changes[0].items())


def _changing(**settings):
    """Settings under which the random tiny refiner changes its draft: no guard and no verification."""
    return dict(max_new_tokens=10, refine_steps=4, seed=0, ignore_eos=True, min_change_confidence=0.0, verify=False) | settings


def test_the_pipeline_with_a_shortlist_of_every_token_is_the_whole_vocabulary(tiny_pipeline):
    vocab = tiny_pipeline.refiner.model.get_output_embeddings().weight.shape[0]
    whole = tiny_pipeline("The history of Rome", **_changing())
    listed = tiny_pipeline("The history of Rome", **_changing(shortlist=vocab))
    assert whole.token_ids == listed.token_ids and whole.token_ids != whole.draft_token_ids


def test_a_shortlisted_batch_equals_one_by_one(tiny_pipeline):
    prompts = ["The history of Rome", "A recipe for bread with a long list of ingredients"]
    batch = tiny_pipeline(prompts, **_changing(shortlist=3))
    for prompt, result in zip(prompts, batch):
        assert tiny_pipeline(prompt, **_changing(shortlist=3)).token_ids == result.token_ids
