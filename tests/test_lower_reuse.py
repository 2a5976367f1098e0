"""Exact reuse of the causal lower layers between refine passes: same logits, recomputed only from the first change."""

import pytest
import torch

from tiny import build_tiny_llama
from hybrid.refiner.logprobs import gather_tokens
from hybrid.refiner import Refiner


@pytest.fixture()
def partial_refiner():
    torch.manual_seed(0)
    model = build_tiny_llama(300)
    refiner = Refiner.create(model, "tiny", lora_r=4, lora_alpha=8, bidirectional_layers=1)
    with torch.no_grad():
        for name, param in refiner.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
        refiner.mask_marker.normal_(0, 0.5)
    return refiner.eval()


def passes(refiner, canvases, shown=None, reuse=True):
    refiner.reuse_lower = reuse
    prompt = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]])
    state = refiner.encode_prompt(prompt, (prompt > 0).long())
    state.shown = shown
    out, recomputed = [], []
    with torch.no_grad():
        for canvas in canvases:
            out.append(refiner.canvas_logits(state, canvas))
            recomputed.append(state.lower.recomputed if state.lower is not None else None)
    return out, recomputed


def test_cached_logits_equal_uncached_and_only_the_suffix_is_recomputed(partial_refiner):
    mask = partial_refiner.mask_token_id
    first = torch.tensor([[20, mask, 22, mask, 24, mask], [30, 31, mask, 33, mask, mask]])
    second = first.clone()
    second[0, 3], second[1, 4] = 40, 41  # slots 3 and 4 filled: slots 0-2 keep their lower states
    third = second.clone()
    third[:, 5] = 42  # only the last slot
    fourth = third.clone()
    fourth[1, 2] = 43  # one row only: the other is not run
    canvases = [first, second, second.clone(), third, fourth]
    cached, recomputed = passes(partial_refiner, canvases)
    plain, _ = passes(partial_refiner, canvases, reuse=False)
    for a, b in zip(cached, plain):
        assert torch.allclose(a, b, atol=1e-5)
    assert recomputed == [12, 6, 0, 2, 4]  # both rows in one pass from slot 3; then the changed row alone


def test_a_masked_slot_showing_its_draft_token_is_unchanged_when_that_token_is_committed(partial_refiner):
    mask = partial_refiner.mask_token_id
    draft = torch.tensor([[20, 21, 22, 23, 24, 25], [30, 31, 32, 33, 34, 35]])
    canvas = draft.clone()
    canvas[:, [1, 4]] = mask
    shown = torch.where(canvas == mask, draft, torch.full_like(draft, -1))
    committed = canvas.clone()
    committed[:, 1] = draft[:, 1]  # the refiner kept the draft's token: the lower layers saw it already
    committed[:, 4] = 50  # a new token at slot 4
    cached, recomputed = passes(partial_refiner, [canvas, committed], shown=shown)
    plain, _ = passes(partial_refiner, [canvas, committed], shown=shown, reuse=False)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(cached, plain))
    assert recomputed == [12, 4]


def test_rows_are_rerun_in_the_passes_of_least_cost():
    from hybrid.refiner.row_passes import pass_groups

    starts = [3, 100, 90, 100, 0]  # 100: unchanged
    assert pass_groups(starts, 100, overhead=0) == [(0, [4]), (3, [0]), (90, [2])]  # every row alone
    assert pass_groups(starts, 100, overhead=1000) == [(0, [4, 0, 2])]  # one pass from the first change
    assert pass_groups(starts, 100, overhead=20) == [(0, [4, 0]), (90, [2])]  # 20 + 200 + 20 + 10
    assert pass_groups([100, 100], 100) == []


def test_batched_passes_equal_one_by_one(partial_refiner):
    mask = partial_refiner.mask_token_id
    first = torch.tensor([[20, mask, 22, mask, 24, mask], [30, 31, mask, 33, mask, mask]])
    second = first.clone()
    second[0, 1], second[1, 2] = 40, 41
    both, _ = passes(partial_refiner, [first, second])
    for row in range(2):
        partial_refiner.reuse_lower = True
        prompt = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]])[row : row + 1]
        state = partial_refiner.encode_prompt(prompt, (prompt > 0).long())
        with torch.no_grad():
            alone = [partial_refiner.canvas_logits(state, c[row : row + 1]) for c in (first, second)]
        assert all(torch.allclose(a[row : row + 1], b, atol=1e-5) for a, b in zip(both, alone))


def _refiner_with_a_lower_tap():
    torch.manual_seed(0)
    model = build_tiny_llama(300)
    refiner = Refiner.create(model, "tiny", lora_r=4, lora_alpha=8, bidirectional_layers=1)
    refiner.add_detection_head(layers=[0, 1], neighbours=1)  # one tap in the causal lower layer, one in the top layer
    with torch.no_grad():
        for name, param in refiner.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
        refiner.mask_marker.normal_(0, 0.5)
        refiner.detection_head.linear.weight.normal_(0, 0.5)
    return refiner.eval()


@pytest.mark.parametrize("prepared", [False, True])
def test_the_draft_scoring_pass_shares_its_lower_states_with_the_first_refine_pass(prepared):
    """Scoring the draft (the detection head) computes the lower layers once: the refine pass over draft + slack that
    follows reruns them only for the slack slots, or for none when the lower layers ran over draft + slack first
    (prepare_lower, as the pipeline does); all results equal those of the passes without reuse."""
    from hybrid.refining.canvas import with_slack

    refiner = _refiner_with_a_lower_tap()
    mask = refiner.mask_token_id
    prompt = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]])
    draft = torch.tensor([[20, 21, 22, 23], [30, 31, 32, 33]])
    canvas = torch.cat([draft, torch.full((2, 2), mask)], dim=1)  # two slack slots
    canvas[:, 1] = mask
    shown = torch.where(canvas == mask, torch.cat([draft, torch.full((2, 2), -1)], dim=1), torch.full_like(canvas, -1))
    results = {}
    for reuse in (True, False):
        refiner.reuse_lower = reuse
        state = refiner.encode_prompt(prompt, (prompt > 0).long())
        with torch.no_grad():
            if prepared:
                refiner.prepare_lower(state, with_slack(draft, [4, 4], 2, 0, mask))
                assert reuse is False or state.lower.recomputed == 12
            confidence = refiner.visible_confidence(state, draft)
            state.shown = shown
            logits = refiner.canvas_logits(state, canvas)
        results[reuse] = (confidence, logits, state.lower.recomputed if state.lower is not None else None)
    assert torch.allclose(results[True][0], results[False][0], atol=1e-5)
    assert torch.allclose(results[True][1], results[False][1], atol=1e-5)
    assert results[True][2] == (0 if prepared else 4)  # else only the slack slots (2 in each row) ran again


def test_the_last_layer_runs_only_on_the_read_positions_with_the_same_result(partial_refiner, monkeypatch):
    """With needed slots, the last layer's queries, output projection and MLP run on the positions that predict them
    alone (the other positions' keys and values still enter): the needed logits equal those of the whole layer."""
    import hybrid.refiner.cache as cache_module

    calls = []
    real = cache_module._last_layer_at
    monkeypatch.setattr(cache_module, "_last_layer_at", lambda *a, **k: calls.append(int(a[4].sum())) or real(*a, **k))
    mask = partial_refiner.mask_token_id
    prompt = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]])
    canvas = torch.tensor([[20, mask, 22, mask, 24, 25], [30, 31, mask, 33, mask, 35]])
    need = canvas == mask

    def run():
        with torch.no_grad():
            state = partial_refiner.encode_prompt(prompt, (prompt > 0).long())
            return partial_refiner.canvas_logits(state, canvas, need)

    split = run()
    assert calls == [4]  # positions 0-3 predict the masked slots (1, 3 and 2, 4); positions 4 and 5 are not run
    monkeypatch.setattr(cache_module, "_SPLITTABLE", ())
    whole = run()
    assert len(calls) == 1
    assert torch.allclose(split[need], whole[need], atol=1e-5)


def test_the_refiners_prompt_pass_takes_the_lower_layers_from_drafting(tiny_model_dir):
    """With lower layers that are the drafter's, the refiner's prompt state starts from what drafting computed over the
    prompt (only the top layers run again): the same cache and logits as its own prompt pass, left padding included,
    and the same refined tokens end to end."""
    pipe = _pipeline_with_causal_lower_layer(tiny_model_dir)
    refiner = pipe.refiner
    prompts = ["The history of Rome", "Tell me about the sea and the ships that sail on it"]  # the first is left-padded
    draft = pipe.draft(prompts, max_new_tokens=8, ignore_eos=True)
    assert draft.lower.prompt_hidden.shape[:2] == draft.prompt_ids.shape
    with torch.no_grad():
        shared = refiner.encode_prompt(draft.prompt_ids, draft.prompt_attention_mask, draft.lower)
        own = refiner.encode_prompt(draft.prompt_ids, draft.prompt_attention_mask)
        assert torch.allclose(shared.last_logits, own.last_logits, atol=1e-5)
        valid = draft.prompt_attention_mask.bool()
        for a, b in zip(shared.cache.layers, own.cache.layers):
            assert torch.allclose(a.keys.transpose(1, 2)[valid], b.keys.transpose(1, 2)[valid], atol=1e-5)
            assert torch.allclose(a.values.transpose(1, 2)[valid], b.values.transpose(1, 2)[valid], atol=1e-5)
        canvas = draft.token_ids.clone()
        canvas[:, 2] = refiner.mask_token_id
        assert torch.allclose(refiner.canvas_logits(shared, canvas), refiner.canvas_logits(own, canvas), atol=1e-5)
    settings = dict(refine_steps=3, strength=0.5, seed=0, draft=draft, verify=False, min_change_confidence=0.0)
    reused = pipe(prompts, **settings)
    refiner.reuse_lower = False
    plain = pipe(prompts, **settings)
    assert [r.token_ids for r in reused] == [r.token_ids for r in plain]


def test_the_scoring_pass_gives_the_refiners_token_probabilities_in_any_chunking(partial_refiner, monkeypatch):
    """visible_confidence without a detection head is p_refiner(token) from the canvas logits, whatever the number of
    rows the output head takes at a time."""
    from hybrid.refiner.model import Refiner as RefinerClass

    prompt = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]])
    canvas = torch.tensor([[20, 21, 22, 23, 24, 25], [30, 31, 32, 33, 34, 35]])
    with torch.no_grad():
        state = partial_refiner.encode_prompt(prompt, (prompt > 0).long())
        expected = gather_tokens(partial_refiner.canvas_logits(state, canvas).log_softmax(-1), canvas).exp()
        whole = partial_refiner.visible_confidence(partial_refiner.encode_prompt(prompt, (prompt > 0).long()), canvas)
        real = RefinerClass._canvas_token_logprobs
        monkeypatch.setattr(RefinerClass, "_canvas_token_logprobs", lambda self, s, h, c: real(self, s, h, c, chunk=3))
        chunked = partial_refiner.visible_confidence(partial_refiner.encode_prompt(prompt, (prompt > 0).long()), canvas)
    assert torch.allclose(whole, expected, atol=1e-5) and torch.allclose(chunked, expected, atol=1e-5)


def _pipeline_with_causal_lower_layer(tiny_model_dir):
    """The tiny drafter with a refiner whose lower layer is causal and LoRA-free (the drafter's own), top layer LoRA'd."""
    from hybrid.pipeline import HybridPipeline

    pipe = HybridPipeline.from_pretrained(draft_model=str(tiny_model_dir), refiner="none")
    refiner = Refiner.create(pipe.drafter.model, str(tiny_model_dir), lora_r=4, lora_alpha=8, bidirectional_layers=1)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in refiner.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
        refiner.mask_marker.normal_(0, 0.5)
    pipe.refiner = refiner.eval()
    return pipe


def test_the_verify_pass_takes_the_lower_layers_from_the_refiner_with_the_same_log_probs(tiny_model_dir, monkeypatch):
    """The refiner's lower states, brought up to the proposal (rerun only from each row's first changed slot), let the
    verify pass run the top layer alone: the same log-probs as the full pass, left padding and a row with nothing to
    score included, and the lower layer does not run in it."""
    from hybrid.refining.verify import DrafterScorer

    pipe = _pipeline_with_causal_lower_layer(tiny_model_dir)
    refiner = pipe.refiner
    prompts = ["a b c", "a much longer prompt here", "another prompt"]  # the first and last are left-padded
    draft = pipe.draft(prompts, max_new_tokens=10, ignore_eos=True)
    scorer = DrafterScorer(refiner.model, refiner.adapter_disabled)
    canvas = torch.cat([draft.token_ids, torch.full((3, 2), 7)], dim=1)  # two slack slots beyond the draft
    canvas[0, 3], canvas[1, 8] = 11, 12
    need = torch.zeros(canvas.shape, dtype=torch.bool)
    need[0, 3:6], need[1, 8:12] = True, True  # row 2: nothing to score
    with torch.no_grad():
        state = refiner.encode_prompt(draft.prompt_ids, draft.prompt_attention_mask, draft.lower)
        masked = canvas.clone()
        masked[:, 5:] = refiner.mask_token_id
        state.shown = torch.where(masked == refiner.mask_token_id, torch.cat([draft.token_ids, torch.full((3, 2), -1)], dim=1), -1)
        refiner.canvas_logits(state, masked)  # a refine pass: the lower states now hold that canvas
        assert refiner.lower_output(state, masked) is None  # a canvas with masks is not a proposal
        # rerun from the first slot whose lower input changed, up to `stop`: rows 0 and 2 change at the slack (10: row
        # 0's slot 3 was shown already), row 1 at 8 (the mask there showed the draft token), so up to slot 9 only row 1 runs
        partial = refiner.lower_output(state, canvas, stop=9)
        assert partial[1].shape[1] == 9 and state.lower.recomputed == 1
        lower = refiner.lower_output(state, canvas)  # then the rest, from 9 in every row
        assert torch.equal(state.lower.inputs, canvas) and state.lower.recomputed == 3 * (12 - 9)
        assert torch.allclose(lower[1][:, :9], partial[1], atol=1e-6)
        plain = scorer.token_logprobs(DrafterScorer.prompt_from_draft(draft), canvas, need)
        lower_layer = refiner.model.get_base_model().model.layers[0]
        runs = []
        monkeypatch.setattr(lower_layer, "forward", lambda *a, **k: runs.append(1))
        shared = scorer.token_logprobs(DrafterScorer.prompt_from_draft(draft), canvas, need, lower=lower)
    assert not runs
    assert lower[0] == 1
    assert torch.allclose(shared, plain, atol=1e-5)
    assert not shared[:, 1:][~need[:, 1:]].any()


def test_verified_refinement_gives_the_same_tokens_and_scores_with_the_verify_pass_on_the_refiners_lower_layers(tiny_model_dir, monkeypatch):
    """End to end, with the detection head choosing what to re-noise: the lower layers run over draft + slack before the
    scoring pass (prepare_lower) and the verify pass takes them from the refiner (lower_output); the proposals, their
    scores and the kept tokens are those of the run that reuses nothing."""
    pipe = _pipeline_with_causal_lower_layer(tiny_model_dir)
    pipe.refiner.add_detection_head(layers=[0, 1], neighbours=1)
    pipe.refiner.config.renoised_input = "draft"  # as the shipped refiners: a re-noised slot shows its draft token
    with torch.no_grad():
        pipe.refiner.detection_head.linear.weight.normal_(0, 0.5)
    pipe.refiner.eval()  # the new head too (its dropout)
    assert pipe.default_select == "confidence"
    prompts = ["The history of Rome", "Tell me about the sea and the ships that sail on it"]
    draft = pipe.draft(prompts, max_new_tokens=12, ignore_eos=True)
    settings = dict(refine_steps=4, strength=0.5, seed=0, draft=draft, verify_weight=1.0, trace=True)
    calls = []
    for name in ("prepare_lower", "lower_output"):
        real = getattr(type(pipe.refiner), name)
        monkeypatch.setattr(type(pipe.refiner), name, lambda self, *a, real=real, name=name: calls.append(name) or real(self, *a))
    shared = pipe(prompts, **settings)
    pipe.refiner.reuse_lower = False
    plain = pipe(prompts, **settings)
    assert calls[:2] == ["prepare_lower", "lower_output"] and sum(len(r.proposals) for r in shared) > 0
    assert [r.token_ids for r in shared] == [r.token_ids for r in plain]
    for a, b in zip(shared, plain):
        assert [(p["start"], p["new_ids"], p["accepted"]) for p in a.proposals] == [(p["start"], p["new_ids"], p["accepted"]) for p in b.proposals]
        assert [p["drafter_gain"] for p in a.proposals] == pytest.approx([p["drafter_gain"] for p in b.proposals], abs=1e-4)


def test_a_change_the_guard_keeps_out_costs_no_lower_rerun_and_no_verify_pass(tiny_model_dir, monkeypatch):
    """min_change_confidence puts the draft token back where the proposal is unsure: the lower layers then see what they
    saw while drafting, so no refine pass reruns them (only the draft's last slot, which drafting never fed, runs once)
    and, with nothing changed, no verify pass runs. Unguarded, the random refiner's changes make both run."""
    from hybrid.refining.verify import DrafterScorer

    pipe = _pipeline_with_causal_lower_layer(tiny_model_dir)
    pipe.refiner.config.renoised_input = "draft"  # as the shipped refiners: a re-noised slot shows its draft token
    prompts = ["The history of Rome", "Tell me about the sea"]
    draft = pipe.draft(prompts, max_new_tokens=12, ignore_eos=True)
    reruns, verify_passes = [], []
    run_lower, token_logprobs = type(pipe.refiner)._run_lower, DrafterScorer.token_logprobs
    monkeypatch.setattr(type(pipe.refiner), "_run_lower",
                        lambda self, state, inputs, rows, start, *a: reruns.append(start) or run_lower(self, state, inputs, rows, start, *a))
    monkeypatch.setattr(DrafterScorer, "token_logprobs",
                        lambda self, *a, **k: verify_passes.append(1) or token_logprobs(self, *a, **k))
    settings = dict(refine_steps=4, strength=0.5, seed=0, draft=draft, select="random", slack=0, trace=True)
    unguarded = pipe(prompts, min_change_confidence=0.0, **settings)
    fed = draft.token_ids.shape[1] - 1
    assert min(reruns) < fed and verify_passes and any(r.proposals for r in unguarded)
    reruns.clear(), verify_passes.clear()
    guarded = pipe(prompts, min_change_confidence=1.0, **settings)
    assert reruns == [fed] and verify_passes == []
    assert [r.token_ids for r in guarded] == [draft.token_ids[row, : draft.lengths[row]].tolist() for row in range(2)]
