"""Grounded refinement: re-noise what the source does not support, refill it from the source, let the drafter decide."""

import pytest
import torch

from hybrid.errors import HybridError
from hybrid.refining.grounded import grounding_source, unsupported_kinds
from hybrid.text.claims import entity_mentions, unsupported_claims

SOURCE = ("On Tuesday the Riverside Water Authority said Marta Kowalczyk will lead a $3.4 million plan to repair "
          "1,250 pipes by March 2027. NASA advised.")
PROMPT = "Summarize this report in one sentence.\n\n" + SOURCE


def test_unsupported_claims_are_the_spans_the_source_lacks():
    text = "The Riverside Water Board said Marta Kowalski will lead a $3.7 million plan to repair 1,250 pipes by June 2027, with ESA funds."
    claims = unsupported_claims(text, SOURCE, ("entity", "number", "word"))
    assert [(c.kind, c.text) for c in claims] == [("entity", "Board"), ("entity", "Kowalski"), ("number", "3.7"), ("entity", "June"),
                                                  ("entity", "ESA"), ("word", "funds")]
    assert all(text[c.start : c.end] == c.text for c in claims)
    assert unsupported_claims("Marta Kowalczyk will lead a $3.4 million plan in March 2027.", SOURCE) == []


def test_entity_mentions_carry_their_place_in_the_text():
    text = "Officials met. Then Marta Kowalczyk and NASA spoke."
    assert [(m.text, text[m.start : m.end]) for m in entity_mentions(text)] == [("Marta Kowalczyk", "Marta Kowalczyk"), ("NASA", "NASA")]


def test_the_source_is_given_or_follows_the_prompts_first_blank_line():
    assert grounding_source(PROMPT) == SOURCE
    assert grounding_source("Summarize.", source="the text") == "the text"
    with pytest.raises(HybridError, match="nothing to ground against"):
        grounding_source("Who was the first emperor of Rome?")


def test_only_the_tokens_of_an_unsupported_claim_are_marked(default_tokenizer):
    ids = default_tokenizer("The plan costs $3.7 million and repairs 1,250 pipes.", add_special_tokens=False).input_ids
    kinds = unsupported_kinds(default_tokenizer, ids, SOURCE)
    marked = [default_tokenizer.decode([i]) for i, k in zip(ids, kinds) if k]
    assert "".join(marked) == "3.7" and set(k for k in kinds if k) == {"number"}


def test_a_teacher_forced_draft_matches_the_drafters_own_scoring(tiny_pipeline):
    from hybrid.refiner.logprobs import gather_tokens
    from hybrid.refining.verify import DrafterScorer

    draft = tiny_pipeline.draft_from_text(["Hello there", "A longer prompt here"], ["one two three", "four"])
    assert draft.texts == ["one two three", "four"]
    scorer = DrafterScorer(tiny_pipeline.refiner.model, tiny_pipeline.refiner.adapter_disabled)
    state = scorer.encode_prompt(draft.prompt_ids, draft.prompt_attention_mask)
    expected = gather_tokens(scorer.logprobs(state, draft.token_ids), draft.token_ids)
    for row, n in enumerate(draft.lengths):
        assert torch.allclose(draft.logprobs[row, : n + 1], expected[row, : n + 1], atol=1e-4)
    assert tiny_pipeline(["Hello there", "A longer prompt here"], draft=draft, refine_steps=0)[0].text == "one two three"


def test_a_supported_draft_is_left_alone_without_running_the_refiner(tiny_pipeline, monkeypatch):
    monkeypatch.setattr(type(tiny_pipeline.refiner), "canvas_logits", lambda *a, **k: pytest.fail("the refiner ran"))
    draft = tiny_pipeline.draft_from_text(PROMPT, "Marta Kowalczyk will lead the plan.")
    result = tiny_pipeline(PROMPT, draft=draft, select="unsupported", refine_steps=2)
    assert result.text == "Marta Kowalczyk will lead the plan." and result.steps_run == 0


def test_a_planted_number_is_repaired_when_the_drafter_prefers_the_source(tiny_pipeline, monkeypatch):
    """The tiny drafter knows nothing, so its verdict is replaced by an oracle that prefers the source's number; what is
    tested is the wiring: the span found, the source copy offered at its own length, the verdict applied, nothing else."""
    import hybrid.refining.grounded_repair as repair_module

    def oracle(scorer, state, rows, ended, original_logp, candidates, end_id, window):
        for c in candidates:
            c.drafter_gain = 1.0 if tiny_pipeline.tokenizer.decode(c.ids).strip() == "1,250" else -1.0

    monkeypatch.setattr(repair_module, "score_candidates", oracle)
    planted = "Marta Kowalczyk will repair 1,870 pipes by March 2027."
    result = tiny_pipeline(PROMPT, draft=tiny_pipeline.draft_from_text(PROMPT, planted), select="unsupported", refine_steps=2,
                           trace=True, max_new_tokens=64)
    assert result.text == "Marta Kowalczyk will repair 1,250 pipes by March 2027."
    assert [(p["old"], p["new"].strip(), p["accepted"], p["origin"]) for p in result.proposals] == [("1,870", "1,250", True, "source")]

    monkeypatch.setattr(repair_module, "score_candidates", lambda *args: [setattr(c, "drafter_gain", -1.0) for c in args[5]])
    kept = tiny_pipeline(PROMPT, draft=tiny_pipeline.draft_from_text(PROMPT, planted), select="unsupported", refine_steps=2,
                         ground_weight=0.0)
    assert kept.text == planted  # nothing scores: the draft stays
    bonus = tiny_pipeline(PROMPT, draft=tiny_pipeline.draft_from_text(PROMPT, planted), select="unsupported", refine_steps=2,
                          ground_weight=1.0)
    assert bonus.text != planted  # 1 nat lost to the drafter, 3 unsupported tokens made supported: the bonus carries it


def test_a_given_source_means_grounding_unless_another_selection_is_chosen(tiny_pipeline, monkeypatch):
    import hybrid.refining.grounded_repair as repair_module

    def oracle(scorer, state, rows, ended, original_logp, candidates, end_id, window):
        for c in candidates:
            c.drafter_gain = 1.0 if tiny_pipeline.tokenizer.decode(c.ids).strip() == "1,250" else -1.0

    monkeypatch.setattr(repair_module, "score_candidates", oracle)
    prompt, planted = "Summarize this report in one sentence.", "Marta Kowalczyk will repair 1,870 pipes by March 2027."
    draft = tiny_pipeline.draft_from_text(prompt, planted)
    grounded = tiny_pipeline(prompt, draft=draft, source=SOURCE, refine_steps=2, trace=True, max_new_tokens=64)
    assert grounded.text == "Marta Kowalczyk will repair 1,250 pipes by March 2027."
    assert {p["origin"] for p in grounded.proposals} == {"source"}
    chosen = tiny_pipeline(prompt, draft=draft, source=SOURCE, refine_steps=2, trace=True, max_new_tokens=64, select="logprob")
    assert "source" not in {p["origin"] for p in chosen.proposals} and "1,250" not in chosen.text  # the user's selection stands


def test_grounded_selection_needs_a_source(tiny_pipeline):
    with pytest.raises(HybridError, match="nothing to ground against"):
        tiny_pipeline("Who was the first emperor of Rome?", select="unsupported", refine_steps=2, max_new_tokens=4)


def test_every_planted_reference_has_exactly_its_planted_error():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evals"))
    from planted_repair import load_plants

    plants = load_plants("validation")
    assert len(plants) >= 40 and {p.kind for p in plants} == {"number", "name"}
    for p in plants:
        claims = unsupported_claims(p.planted, p.source)
        assert claims and all(c.start < p.end and p.start < c.end for c in claims), p.id
        assert p.planted[p.start : p.end] == p.new and p.reference[: p.start] + p.new + p.reference[p.start + len(p.old) :] == p.planted


def test_cli_refuses_a_sourceless_prompt_in_one_line_before_loading_anything(monkeypatch):
    import hybrid.pipeline
    from click.testing import CliRunner

    from hybrid.cli import cli

    monkeypatch.setattr(hybrid.pipeline.HybridPipeline, "from_pretrained", lambda *a, **k: pytest.fail("a model was loaded"))
    result = CliRunner().invoke(cli, ["generate", "Who was the first emperor of Rome?", "--select", "unsupported"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "nothing to ground against" in lines[0]


def test_cli_grounds_against_a_source_file(tiny_model_dir, tiny_refiner_dir, tmp_path):
    import json

    from click.testing import CliRunner

    from hybrid.cli import cli

    source = tmp_path / "report.txt"
    source.write_text(SOURCE)
    result = CliRunner().invoke(cli, ["generate", "Summarize the report.", "--source", str(source),  # grounding is implied
                                      "--draft-model", str(tiny_model_dir), "--refiner", str(tiny_refiner_dir), "--max-new-tokens", "8",
                                      "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["mode"] == "hybrid"


def test_grounded_training_blanks_the_supported_names_and_numbers(default_tokenizer):
    from hybrid.finetune.data import TokenisedExample
    from hybrid.finetune.objective import collate, corrupt
    from hybrid.finetune.recipe import ObjectiveSection
    from hybrid.refining.grounded import supported_claim_tokens

    target = default_tokenizer("Plans say Marta Kowalczyk will repair 1,250 pipes in Paris.", add_special_tokens=False).input_ids
    claims = supported_claim_tokens(default_tokenizer, target, SOURCE)
    marked = "".join(default_tokenizer.decode([t]) for t, c in zip(target, claims) if c)
    assert marked.replace(" ", "") == "MartaKowalczyk1,250"  # Paris is not in the source: not a supported claim
    batch = collate([TokenisedExample([1, 2, 3], target, claims)], pad_id=0, end_id=2, slack=2)
    config = ObjectiveSection(min_mask_rate=0.0, max_mask_rate=0.0, substitution_rate=0.0, claim_mask_rate=1.0)
    corruption = corrupt(batch, batch.target_ids, 99, config, torch.Generator().manual_seed(0))
    assert corruption.masked[0, : len(target)].tolist() == claims


def test_an_invented_detail_can_be_cut_out_with_its_connecting_words(tiny_pipeline, monkeypatch):
    """With ground_deletions, a span the source has no counterpart for may be cut, with the words that tie it in; the
    oracle verdict prefers the cut, and with ground_deletions off the cut is never offered."""
    import hybrid.refining.grounded_repair as repair_module

    def oracle(scorer, state, rows, ended, original_logp, candidates, end_id, window):
        for c in candidates:
            c.drafter_gain = 1.0 if c.origin == "deletion" and c.start < c.span else -5.0

    monkeypatch.setattr(repair_module, "score_candidates", oracle)
    text = "Marta Kowalczyk will repair 1,250 pipes in Portugal by March 2027."
    cut = tiny_pipeline(PROMPT, draft=tiny_pipeline.draft_from_text(PROMPT, text), select="unsupported", refine_steps=2, trace=True,
                        ground_deletions=True, max_new_tokens=64)
    assert cut.text == "Marta Kowalczyk will repair 1,250 pipes by March 2027."
    assert [(p["old"].strip(), p["new"], p["origin"]) for p in cut.proposals] == [("in Portugal", "", "deletion")]
    kept = tiny_pipeline(PROMPT, draft=tiny_pipeline.draft_from_text(PROMPT, text), select="unsupported", refine_steps=2, trace=True,
                         ground_deletions=False, max_new_tokens=64)
    assert kept.text == text and all(p["origin"] != "deletion" for p in kept.proposals)


def test_a_cut_never_displaces_a_copy_the_drafter_accepts(tiny_pipeline, monkeypatch):
    """A cut removes what the span said: it is weighed only where no copy from the source scores above 0, so a copy
    that does is kept even when the cut would score higher."""
    import hybrid.refining.grounded_repair as repair_module

    def oracle(scorer, state, rows, ended, original_logp, candidates, end_id, window):
        for c in candidates:
            c.drafter_gain = 5.0 if c.origin == "deletion" else 0.5 if c.origin == "source" else -5.0

    monkeypatch.setattr(repair_module, "score_candidates", oracle)
    text = "Marta Kowalczyk will repair 1,250 pipes in Portugal by March 2027."
    out = tiny_pipeline(PROMPT, draft=tiny_pipeline.draft_from_text(PROMPT, text), select="unsupported", refine_steps=2, trace=True,
                        max_new_tokens=64)
    assert [(p["old"].strip(), p["origin"], p["accepted"]) for p in out.proposals] == [("Portugal", "source", True)]
    assert "Portugal" not in out.text and " in " in out.text


def test_a_run_too_long_for_any_claim_is_left_alone(tiny_pipeline, monkeypatch):
    """A degenerate run of unsupported tokens (a hyphenated chain) is no mis-copied claim: even with every candidate
    preferred, it keeps its tokens and gets no proposal, while the short planted number beside it is still repaired."""
    import hybrid.refining.grounded_repair as repair_module

    monkeypatch.setattr(repair_module, "score_candidates", lambda *args: [setattr(c, "drafter_gain", 1.0) for c in args[5]])
    chain = "-".join(["Zorp", "to", "Blent"] * 8)
    text = f"Marta Kowalczyk will repair 1,870 pipes with {chain} tools."
    out = tiny_pipeline(PROMPT, draft=tiny_pipeline.draft_from_text(PROMPT, text), select="unsupported", refine_steps=2, trace=True,
                        max_new_tokens=96)
    assert chain in out.text and "1,870" not in out.text
    assert all(len(tiny_pipeline.tokenizer(p["old"], add_special_tokens=False).input_ids) <= repair_module.MAX_SPAN_TOKENS
               for p in out.proposals)
    monkeypatch.setattr(repair_module, "MAX_SPAN_TOKENS", 10**6)
    unbounded = tiny_pipeline(PROMPT, draft=tiny_pipeline.draft_from_text(PROMPT, text), select="unsupported", refine_steps=2,
                              max_new_tokens=96)
    assert chain not in unbounded.text  # the bound, not the scoring, is what keeps it
