"""The real embedded default drafter (slow: converts/loads SmolLM2-135M). CI runs these too."""

import json

import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.slow

COMMON_WORDS = {"the", "of", "and", "a", "to", "in", "is", "was", "its", "from"}


def test_default_drafter_writes_english():
    from hybrid import HybridPipeline

    pipe = HybridPipeline.from_pretrained(refiner="none")
    result = pipe("The history of Rome", max_new_tokens=24, refine_steps=0)
    words = {w.strip(".,;:").lower() for w in result.text.split()}
    assert len(result.text.split()) >= 10
    assert words & COMMON_WORDS, result.text
    assert "rome" in result.text.lower() or "roman" in result.text.lower()
    assert result.timings.draft_tokens_per_s > 0


def test_cli_json_on_default():
    from hybrid.cli import cli

    result = CliRunner().invoke(cli, ["generate", "The history of Rome", "--refine-steps", "0", "--max-new-tokens", "16", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["mode"] == "draft" and len(data["token_ids"]) == 16 and data["timings"]["draft_s"] > 0


def test_shipped_general_refiner_scores_drafts_with_its_detection_head():
    """The default refiner loads with its detection head (layers 19-29, one neighbour each side), and ranking a draft
    for re-noising uses the head, not the token probability. (Its quality is the validation's AUC, not a unit test.)"""
    import torch

    from hybrid import HybridPipeline
    from hybrid.refiner.logprobs import token_logprob
    from hybrid.refining.canvas import score_draft

    pipe = HybridPipeline.from_pretrained()
    refiner = pipe.refiner
    assert refiner.has_detection_head([-11, -9, -7, -5, -3, -1], 1)
    prompt_ids, prompt_mask = pipe.drafter.encode_prompts(["Name the capital cities of Italy and Spain."])
    draft = pipe.drafter.tokenizer("The capital of Italy is Rome, and the capital of Spain is Madrid.", return_tensors="pt").input_ids
    with torch.no_grad():
        scores = score_draft(refiner, refiner.encode_prompt(prompt_ids, prompt_mask), draft)
        probability = token_logprob(refiner.canvas_logits(refiner.encode_prompt(prompt_ids, prompt_mask), draft), draft).exp()
    assert scores.shape == draft.shape and bool(((scores > 0) & (scores < 1)).all())
    assert (scores - probability).abs().max() > 0.1


def test_the_shipped_lookup_store_serves_the_default_drafter():
    from hybrid.config import DraftConfig
    from hybrid.drafting.drafter import Drafter

    drafter = Drafter.from_pretrained()
    store = drafter.token_store
    assert store is not None and store.config.base_model == "smollm2-135m" and store.config.tokens > 10_000
    assert Drafter.from_pretrained(lookup_store="none").token_store is None
    # the store speeds drafting on an open prompt and leaves its text alone
    prompt = "Write a short story about a lighthouse keeper."
    stored = drafter.generate(prompt, DraftConfig(max_new_tokens=48, ignore_eos=True))
    drafter.token_store = None
    alone = drafter.generate(prompt, DraftConfig(max_new_tokens=48, ignore_eos=True))
    assert stored.token_ids.tolist() == alone.token_ids.tolist()
    assert stored.speculation.proposed > alone.speculation.proposed


def test_the_shipped_block_drafter_proposes_for_the_default_drafter():
    """`--speculate diffusion` finds the shipped block drafter: its proposals are kept at times, and the draft is plain
    drafting's."""
    from hybrid.drafting.block_drafter import BlockDrafter
    from hybrid.drafting.drafter import Drafter
    from hybrid.config import DraftConfig

    drafter = Drafter.from_pretrained(lookup_store="none")
    drafter.block_drafter = BlockDrafter.load("block-drafter", drafter.model)
    assert drafter.block_drafter.config.base_model == "smollm2-135m"
    prompt = "Write a short story about a lighthouse keeper."
    block = drafter.generate(prompt, DraftConfig(max_new_tokens=48, ignore_eos=True, speculate="diffusion"))
    plain = drafter.generate(prompt, DraftConfig(max_new_tokens=48, ignore_eos=True, speculate="off"))
    assert block.token_ids.tolist() == plain.token_ids.tolist()
    assert block.speculation.passes < 48
