"""Drafter-verified edits: the refiner proposes, the drafter keeps only what raises its likelihood."""

import torch

from hybrid.refining.verify import _groups, verify_changes

END = 0


def drafter_logp(canvas, target, good=-0.1, bad=-5.0):
    """An oracle drafter: the target token at each position is likely, any other token unlikely."""
    return torch.where(canvas == target, torch.full(canvas.shape, good), torch.full(canvas.shape, bad))


def test_groups_chain_changes_within_the_window():
    assert _groups([1, 3, 12, 13, 30], 4) == [(1, 3), (12, 13), (30, 30)]
    assert _groups([], 4) == []


def test_rejects_a_planted_bad_edit_and_keeps_a_planted_good_one():
    target = torch.tensor([[5, 6, 7, 8, 9, 5, 6, 7, 8, 9, 5, 6, 7, 8, 9, 5, 6, 7, 8, 9, END, END]])
    draft = target.clone()
    draft[0, 3] = 1  # the draft is wrong at 3
    proposed = draft.clone()
    proposed[0, 3] = 8  # good: back to the target
    proposed[0, 15] = 2  # bad: breaks a right token
    editable = torch.ones_like(draft, dtype=torch.bool)
    final, proposals = verify_changes(draft, proposed, drafter_logp(draft, target), drafter_logp(proposed, target),
                                      torch.zeros(draft.shape), editable, {END}, window=4, weight=0.0)
    assert torch.equal(final, target)
    assert [(p.start, p.accepted) for p in proposals] == [(3, True), (15, False)]
    assert proposals[0].drafter_gain > 0 > proposals[1].drafter_gain


def test_refiner_evidence_can_outweigh_the_drafter_only_when_weighted():
    target = torch.tensor([[5, 6, 7, 8, 9, END]])
    proposed = target.clone()
    proposed[0, 2] = 3  # the drafter dislikes it; the refiner is sure of it
    gain = torch.zeros(target.shape)
    gain[0, 2] = 2.0
    editable = torch.ones_like(target, dtype=torch.bool)
    args = (target, proposed, drafter_logp(target, target), drafter_logp(proposed, target), gain, editable, {END})
    at_zero, _ = verify_changes(*args, window=2, weight=0.0)
    heavy, proposals = verify_changes(*args, window=2, weight=5.0)
    assert torch.equal(at_zero, target)  # weight 0: nothing the drafter dislikes gets through
    assert heavy[0, 2] == 3 and proposals[0].score > 0


def test_slack_text_is_appended_only_when_it_scores():
    draft = torch.tensor([[5, 6, 7, END, END, END]])  # the draft ended after 3 tokens; 3 slack slots
    appended = torch.tensor([[5, 6, 7, 8, 9, END]])
    editable = torch.ones_like(draft, dtype=torch.bool)
    likes_ending = torch.tensor([[-0.1, -0.1, -0.1, -0.2, -3.0, -3.0]])  # the drafter wants the text to end at 3
    likes_more = torch.tensor([[-0.1, -0.1, -0.1, -4.0, -4.0, -4.0]])  # ... or not
    appended_logp = torch.tensor([[-0.1, -0.1, -0.1, -0.5, -0.5, -0.5]])
    kept, _ = verify_changes(draft, appended, likes_more, appended_logp, torch.zeros(draft.shape), editable, {END}, 8, 0.0)
    refused, proposals = verify_changes(draft, appended, likes_ending, appended_logp, torch.zeros(draft.shape), editable, {END}, 8, 0.0)
    assert torch.equal(kept, appended)
    assert torch.equal(refused, draft) and not proposals[0].accepted
    # the draft is charged for its own end token only, the appended text for its tokens and its end
    assert abs(proposals[0].drafter_gain - (-1.5 - (-0.2))) < 1e-6


def test_only_editable_positions_are_proposed():
    draft = torch.tensor([[5, 6, 7, END]])
    proposed = torch.tensor([[5, 6, 7, 9]])
    editable = torch.tensor([[True, True, True, False]])  # batch padding
    final, proposals = verify_changes(draft, proposed, torch.zeros(draft.shape), torch.zeros(draft.shape),
                                      torch.zeros(draft.shape), editable, {END}, 4, 0.0)
    assert proposals == [] and torch.equal(final, draft)


def test_drafter_scorer_gives_the_drafts_own_log_probs(tiny_pipeline):
    """The teacher-forced pass over a greedy draft reproduces drafting's log-probs (prompt cache reused, then cropped)."""
    from hybrid.refiner.logprobs import gather_tokens
    from hybrid.refining.verify import DrafterScorer

    pipe = tiny_pipeline
    draft = pipe.draft(["a b c", "a much longer prompt here"], max_new_tokens=6, ignore_eos=True)
    scorer = DrafterScorer(pipe.refiner.model, pipe.refiner.adapter_disabled)
    with torch.inference_mode():
        # its own prefill, or the prompt part of the draft's KV cache (no prefill): the same figures
        for state in (scorer.encode_prompt(draft.prompt_ids, draft.prompt_attention_mask), DrafterScorer.prompt_from_draft(draft)):
            for _ in range(2):  # the cache holds only the prompt after each pass
                logp = scorer.logprobs(state, draft.token_ids)
                assert torch.allclose(gather_tokens(logp, draft.token_ids), draft.logprobs, atol=1e-4)
                assert torch.equal(logp.argmax(-1), draft.token_ids)  # greedy: the draft is the drafter's argmax
                assert torch.allclose(logp, draft.distributions, atol=1e-4)  # the prior kept from drafting is the same


def test_the_verify_pass_equals_the_full_teacher_forced_pass_from_wherever_it_starts(tiny_pipeline, monkeypatch):
    """token_logprobs gives the full pass's log-probs at the needed slots (and slot 0), zeros elsewhere: from drafting's
    cache (each row run only from where it departs from the draft, up to its last needed slot) and from a bare prompt
    state alike, left padding included; a row with nothing to score after slot 0 does not run."""
    from hybrid.refiner.logprobs import gather_tokens
    from hybrid.refining.verify import DrafterScorer

    pipe = tiny_pipeline
    prompts = ["a b c", "a much longer prompt here", "another prompt"]  # the first and last are left-padded
    draft = pipe.draft(prompts, max_new_tokens=10, ignore_eos=True)
    scorer = DrafterScorer(pipe.refiner.model, pipe.refiner.adapter_disabled)
    canvas = torch.cat([draft.token_ids, torch.full((3, 2), 7)], dim=1)  # two slack slots beyond what drafting fed
    canvas[0, 3], canvas[1, 8] = 11, 12
    need = torch.zeros(canvas.shape, dtype=torch.bool)
    need[0, 3:6], need[1, 8:12] = True, True  # row 2: nothing to score
    runs = []
    real = pipe.refiner.model.forward
    monkeypatch.setattr(pipe.refiner.model, "forward", lambda *a, **k: runs.append(tuple(k["input_ids"].shape)) or real(*a, **k))
    import hybrid.refining.verify as verify_module

    grouping = verify_module.pass_groups
    with torch.inference_mode():
        plain = gather_tokens(scorer.logprobs(scorer.encode_prompt(draft.prompt_ids, draft.prompt_attention_mask), canvas), canvas)
        for overhead in (0, 50):
            monkeypatch.setattr(verify_module, "pass_groups", lambda starts, length: grouping(starts, length, overhead))
            runs.clear()
            for state in (DrafterScorer.prompt_from_draft(draft), scorer.encode_prompt(draft.prompt_ids, draft.prompt_attention_mask)):
                got = scorer.token_logprobs(state, canvas, need)
                assert torch.allclose(got[need], plain[need], atol=1e-4)
                assert torch.allclose(got[:, 0], plain[:, 0], atol=1e-4)
                assert not got[:, 1:][~need[:, 1:]].any()
            # from the draft, row 0 runs positions 2-4 (2 predicts the changed slot 3) and row 1 positions 7-10: apart
            # when a pass costs nothing more than its positions, else together from 2; from a bare prompt, from 0
            assert runs == ([(1, 3), (1, 4), (2, 11)] if overhead == 0 else [(2, 9), (2, 11)])


def test_zero_residual_returns_the_greedy_draft(tiny_pipeline):
    """With the refiner's weight at 0 the product is the drafter itself: unverified, the hybrid gives back the draft."""
    pipe = tiny_pipeline
    draft = pipe.draft(["a b c", "tell me more"], max_new_tokens=8, ignore_eos=True)
    pipe.refiner.residual_weight = 0.0
    try:
        results = pipe(["a b c", "tell me more"], max_new_tokens=8, refine_steps=4, strength=1.0, draft=draft, verify=False,
                       slack=0, select="random", seed=0)
    finally:
        pipe.refiner.residual_weight = 1.0
    raw = pipe(["a b c", "tell me more"], max_new_tokens=8, refine_steps=4, strength=1.0, draft=draft, verify=False, slack=0,
               product=False, select="random", min_change_confidence=0.0, seed=0)
    for row, result in enumerate(results):
        assert result.token_ids == draft.token_ids[row].tolist()
    assert any(r.token_ids != draft.token_ids[i].tolist() for i, r in enumerate(raw))  # the random refiner alone does change it


def test_trace_lists_every_proposal_with_its_verdict(tiny_pipeline):
    # unguarded: a random refiner is never sure of a change
    result = tiny_pipeline("a b c", max_new_tokens=8, refine_steps=4, strength=1.0, trace=True, product=False, seed=0,
                           min_change_confidence=0.0)
    assert result.proposals, "a random refiner proposes changes"
    for proposal in result.proposals:
        assert set(proposal) == {"start", "end", "old", "new", "old_ids", "new_ids", "drafter_gain", "refiner_gain", "grounding_gain", "origin", "score", "accepted"}
        assert proposal["accepted"] == (proposal["score"] > 0)
    kept = [p for p in result.proposals if p["accepted"]]
    changed = [i for i, t in enumerate(result.token_ids) if i >= len(result.draft_token_ids) or t != result.draft_token_ids[i]]
    assert all(any(p["start"] <= i <= p["end"] for p in kept) for i in changed)  # every change in the text was verified


def test_a_cut_drafts_slack_is_put_back_before_scoring(tiny_pipeline):
    """A draft cut at max_new_tokens does not grow, and its proposals are scored on the draft's own slots only: not on
    the refiner's fills of the slack, nor on an end slot the draft never chose."""
    from hybrid.refiner.logprobs import gather_tokens
    from hybrid.refining.verify import DrafterScorer

    pipe = tiny_pipeline
    n, window = 10, 4
    draft = pipe.draft(["a b c"], max_new_tokens=n, ignore_eos=True)
    result = pipe("a b c", max_new_tokens=n, refine_steps=2, strength=1.0, draft=draft, trace=True, product=False,
                  verify_window=window, min_change_confidence=0.0, seed=0)
    assert result.proposals and len(result.token_ids) <= n
    eos = pipe.tokenizer.eos_token_id
    original = torch.tensor([draft.token_ids[0].tolist() + [eos] * 4])
    proposed = original.clone()
    for p in result.proposals:
        proposed[0, p["start"] : p["end"] + 1] = torch.tensor(p["new_ids"])
    scorer = DrafterScorer(pipe.refiner.model, pipe.refiner.adapter_disabled)
    with torch.inference_mode():
        state = scorer.encode_prompt(draft.prompt_ids, draft.prompt_attention_mask)
        old = gather_tokens(scorer.logprobs(state, original), original)[0]
        new = gather_tokens(scorer.logprobs(state, proposed), proposed)[0]
    ends = pipe.drafter.end_ids

    def stop(canvas, p):  # the window: up to `window` tokens after the group, and up to the version's end token
        first_end = next(i for i in range(p["start"], canvas.shape[1]) if int(canvas[0, i]) in ends or i == canvas.shape[1] - 1)
        return min(p["end"] + window, first_end, n - 1)  # a cut draft's end slot is not scored: it never ended there

    for p in result.proposals:
        expected = float(new[p["start"] : stop(proposed, p) + 1].sum() - old[p["start"] : stop(original, p) + 1].sum())
        assert abs(p["drafter_gain"] - expected) < 1e-2, (p["start"], p["end"], p["drafter_gain"], expected)


def test_the_verify_windows_cover_every_slot_a_score_reads():
    from hybrid.refining.steps import within_window

    changed = torch.tensor([[False, True, False, False, False, False, False], [False] * 6 + [True]])
    scored = within_window(changed, 2)
    assert scored.tolist() == [[False, True, True, True, False, False, False], [False] * 6 + [True]]
    assert within_window(changed, 0).equal(changed)
