"""HybridPipeline end to end on a tiny random drafter and refiner."""

import pytest

from hybrid.drafting.drafter import DraftConfig, Drafter
from hybrid.errors import HybridError
from hybrid.pipeline import HybridPipeline


def test_draft_mode_equals_plain_drafter(tiny_pipeline, tiny_model):
    """Loading a refiner on the shared backbone must not change the drafts (LoRA is off while drafting)."""
    model, tokenizer = tiny_model
    plain = Drafter(model, tokenizer).generate("The history of Rome", DraftConfig(max_new_tokens=10, ignore_eos=True))
    result = tiny_pipeline("The history of Rome", max_new_tokens=10, refine_steps=0, ignore_eos=True)
    assert result.mode == "draft" and result.steps_run == 0
    assert result.token_ids == plain.token_ids[0].tolist()
    assert result.text == result.draft_text == plain.texts[0]


def test_hybrid_mode_refines(tiny_pipeline):
    result = tiny_pipeline("The history of Rome", max_new_tokens=12, refine_steps=4, strength=0.5, seed=0, trace=True, ignore_eos=True,
                           min_change_confidence=0.0, verify=False, product=False)
    assert result.mode == "hybrid"
    assert 1 <= result.steps_run <= 4
    assert result.draft_text is not None and len(result.draft_token_ids) == 12
    assert len(result.trace) == result.steps_run
    committed = sum(len(step.changes) for step in result.trace)
    assert committed >= 6  # half of the 12 draft tokens plus slack were masked and had to be filled
    assert result.timings.refine_s > 0 and result.timings.draft_s > 0
    assert result.token_ids != result.draft_token_ids  # a random refiner rewrites what it was given
    decode = lambda i: tiny_pipeline.tokenizer.decode([i])  # noqa: E731
    changes = [c for step in result.trace for c in step.changes]
    # the trace shows decoded pieces (words, not BPE symbols such as 'Ġof'), with the token ids beside them
    assert all(c["new"] == decode(c["new_id"]) and c["old"] in ("[MASK]", decode(c["old_id"])) for c in changes)
    assert any(c["old"] == "[MASK]" for c in changes)


def test_the_trace_decodes_byte_level_symbols(default_tokenizer):
    from types import SimpleNamespace

    from hybrid.refining.sampler import TraceEntry
    from hybrid.results import _trace

    of, line = default_tokenizer.encode(" of", add_special_tokens=False)[0], default_tokenizer.encode("\n", add_special_tokens=False)[0]
    output = SimpleNamespace(trace=[[[TraceEntry(3, 999_999, of, 0.9), TraceEntry(4, of, line, 0.1)]]])
    changes = _trace(default_tokenizer, 999_999, output, 0)[0].changes
    assert [(c["old"], c["new"], c["old_id"], c["new_id"]) for c in changes] == [("[MASK]", " of", 999_999, of), (" of", "\n", of, line)]
    assert default_tokenizer.convert_ids_to_tokens(of) == "Ġof"  # the raw symbol the trace used to show


def test_diffusion_mode_has_no_draft(tiny_pipeline):
    result = tiny_pipeline("Hello", max_new_tokens=8, mode="diffusion", refine_steps=4, seed=0)
    assert result.draft_text is None and result.draft_token_ids == []
    assert result.timings.draft_s == 0 and result.steps_run >= 1
    assert len(result.token_ids) <= 8


def test_same_seed_same_output_and_batches_match(tiny_pipeline):
    prompts = ["The history of Rome", "A recipe for bread with a long list of ingredients"]
    kwargs = dict(max_new_tokens=8, refine_steps=4, seed=1, ignore_eos=True)
    batch = tiny_pipeline(prompts, **kwargs)
    again = tiny_pipeline(prompts, **kwargs)
    assert [r.token_ids for r in batch] == [r.token_ids for r in again]
    for prompt, result in zip(prompts, batch):
        assert tiny_pipeline(prompt, **kwargs).token_ids == result.token_ids


def test_confidence_selection_runs(tiny_pipeline):
    result = tiny_pipeline("Hello", max_new_tokens=8, refine_steps=2, select="confidence", ignore_eos=True)
    assert result.steps_run >= 1


def test_refine_without_refiner_is_refused(tiny_model_dir):
    pipe = HybridPipeline.from_pretrained(draft_model=str(tiny_model_dir), refiner="none")
    with pytest.raises(HybridError, match="no refiner"):
        pipe("Hello", refine_steps=8)


@pytest.mark.parametrize("kwargs", [dict(strength=0.0), dict(strength=1.5), dict(refine_steps=-1), dict(refine_steps=10_000), dict(mode="other")])
def test_bad_settings_refused(tiny_pipeline, kwargs):
    settings = dict(max_new_tokens=4, refine_steps=2) | kwargs
    with pytest.raises(HybridError):
        tiny_pipeline("Hello", **settings)


def test_canvas_beyond_context_refused(tiny_pipeline):
    with pytest.raises(HybridError, match="context"):
        tiny_pipeline("word " * 100, max_new_tokens=200, mode="diffusion", refine_steps=2)


@pytest.mark.parametrize("shortlist", [0, 64])
def test_partial_output_head_changes_nothing(tiny_pipeline, monkeypatch, shortlist):
    """Running the output head only on the slots the sampler reads (over each slot's shortlist, or the whole vocabulary)
    must give the same text as running it everywhere."""
    kwargs = dict(max_new_tokens=10, refine_steps=4, edit_threshold=0.3, seed=0, ignore_eos=True, trace=True, shortlist=shortlist,
                  min_change_confidence=0.0, verify=False)
    fast = tiny_pipeline("The history of Rome", **kwargs)
    full_head = tiny_pipeline.refiner.canvas_logits
    monkeypatch.setattr(tiny_pipeline.refiner, "needed_logits", lambda state, canvas, need: full_head(state, canvas)[need])

    def listed_from_the_full_head(state, canvas, need, ids, rule):
        logits = full_head(state, canvas)[need]
        whole = rule(logits.gather(1, ids.clamp(min=0)))
        return logits.gather(1, ids.clamp(min=0)), logits[whole], whole

    monkeypatch.setattr(tiny_pipeline.refiner, "listed_logits", listed_from_the_full_head)
    slow = tiny_pipeline("The history of Rome", **kwargs)
    assert fast.token_ids == slow.token_ids and fast.edits_per_step == slow.edits_per_step
    assert fast.token_ids != fast.draft_token_ids


@pytest.mark.parametrize("verify", [True, False])
def test_a_verified_draft_cut_at_its_limit_is_refined_without_slack(tiny_pipeline, verify):
    """Verified, a draft that used every token it was allowed may not grow: its canvas has no slack slots to fill.
    Unverified it may grow, so the slack is there."""
    widths = []
    tiny_pipeline("The history of Rome", max_new_tokens=10, refine_steps=2, ignore_eos=True, verify=verify,
                  callback_on_step_end=lambda step, canvas, changed: widths.append(canvas.shape[1]))
    assert widths == [10, 10] if verify else widths == [14, 14]


def test_refining_a_given_draft_equals_the_one_call_path(tiny_pipeline):
    kwargs = dict(max_new_tokens=10, seed=0, ignore_eos=True)
    draft = tiny_pipeline.draft(["The history of Rome"], **kwargs)
    reused = tiny_pipeline(["The history of Rome"], refine_steps=4, draft=draft, **kwargs)[0]
    direct = tiny_pipeline("The history of Rome", refine_steps=4, **kwargs)
    assert reused.token_ids == direct.token_ids and reused.draft_text == direct.draft_text
    assert reused.timings.total_s >= reused.timings.draft_s > 0


def test_cache_refresh_runs_and_one_means_exact(tiny_pipeline):
    kwargs = dict(max_new_tokens=10, refine_steps=4, seed=0, ignore_eos=True)
    exact = tiny_pipeline("The history of Rome", **kwargs)
    assert tiny_pipeline("The history of Rome", cache_refresh=1, **kwargs).token_ids == exact.token_ids
    fast = tiny_pipeline("The history of Rome", cache_refresh=4, **kwargs)
    assert fast.steps_run >= 1 and len(fast.token_ids) > 0
    with pytest.raises(HybridError):
        tiny_pipeline("x", cache_refresh=-1, **kwargs)


def test_refines_by_default_when_a_refiner_is_loaded(tiny_pipeline, tiny_model_dir):
    from hybrid.config import DEFAULT_REFINE_STEPS

    assert tiny_pipeline("Hello", max_new_tokens=6, ignore_eos=True).refine_steps == DEFAULT_REFINE_STEPS > 0
    plain = HybridPipeline.from_pretrained(draft_model=str(tiny_model_dir), refiner="none")
    assert plain("Hello", max_new_tokens=6).refine_steps == 0


def test_min_change_confidence_one_keeps_every_draft_token(tiny_pipeline):
    result = tiny_pipeline("The history of Rome", max_new_tokens=10, refine_steps=4, strength=1.0, seed=0, ignore_eos=True,
                           min_change_confidence=1.0)
    assert result.token_ids[:10] == result.draft_token_ids
    changed = tiny_pipeline("The history of Rome", max_new_tokens=10, refine_steps=4, strength=1.0, seed=0, ignore_eos=True,
                            min_change_confidence=0.0, verify=False, product=False)
    assert changed.token_ids[:10] != changed.draft_token_ids
