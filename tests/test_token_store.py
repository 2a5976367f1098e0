"""The lookup store (hybrid.drafting.token_store): drafted text that lookup speculation reads where the prompt and the
text so far hold no match. It proposes what followed the same tokens there, never crosses from one text into the next,
belongs to one tokenizer, and never changes a draft."""

import json

import pytest
import torch
from click.testing import CliRunner

from hybrid.cli import cli
from hybrid.config import DraftConfig
from hybrid.drafting.drafter import Drafter
from hybrid.drafting.proposals import LookupProposals, proposal_source
from hybrid.drafting.token_store import TokenStore, resolve_token_store
from hybrid.errors import HybridError


class Letters:
    """A tokenizer as far as a store's fingerprint asks: its ids of a text, and its size."""

    def __init__(self, size=100):
        self.size = size

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) % self.size for c in text]}

    def __len__(self):
        return self.size


def _store(texts):
    return TokenStore.from_sequences(texts, "letters", Letters())


def test_continuation_takes_the_longest_match_and_the_latest_place():
    store = _store([[1, 2, 3, 4, 5, 6], [9, 2, 3, 7, 8], [0, 3, 9]])
    assert store.continuation([5, 2, 3], 3) == [7, 8]  # the latest "2 3"; the text ends after 8 (no crossing)
    assert store.continuation([1, 2, 3], 2) == [4, 5]  # "1 2 3" matches longer than the later "2 3"
    assert store.continuation([4, 4, 3], 4, shortest=2) == []  # no 2-gram
    assert store.continuation([4, 4, 3], 4) == [9]  # the last token alone, by default
    assert store.continuation([7, 8], 4) == []  # nothing follows the end of a text
    assert store.continuation([6, 9], 4, shortest=2) == []  # the end of one text and the start of the next are no 2-gram
    assert _store([[1]]).continuation([5, 1], 3, shortest=1) == [] and _store([]).continuation([1, 2], 3) == []
    voted = _store([[1, 2, 5, 6], [1, 2, 5, 7], [1, 2, 8, 9]])
    assert voted.continuation([1, 2], 2) == [5, 7]  # most places go on with 5: the latest of them


def test_save_load_and_the_tokenizer_fingerprint(tmp_path):
    store = _store([[1, 2, 3, 4]])
    store.save(tmp_path / "store")
    loaded = resolve_token_store(str(tmp_path / "store"), Letters())
    assert loaded.continuation([1, 2], 5) == [3, 4] and loaded.config.tokens == 4
    with pytest.raises(HybridError, match="another tokenizer"):
        resolve_token_store(str(tmp_path / "store"), Letters(size=50))
    with pytest.raises(HybridError, match="does not exist"):
        resolve_token_store(str(tmp_path / "missing"), Letters())
    (tmp_path / "store" / "lookup_store.safetensors").write_bytes(b"garbage")
    with pytest.raises(HybridError, match="cannot read the lookup store"):
        resolve_token_store(str(tmp_path / "store"), Letters())
    (tmp_path / "store" / "lookup_store_config.json").write_text("{not json")
    with pytest.raises(HybridError, match="cannot read the lookup store"):
        resolve_token_store(str(tmp_path / "store"), Letters())
    assert resolve_token_store("none", Letters()) is None


def test_lookup_reads_the_store_only_where_the_text_has_no_match():
    store = _store([[7, 8, 1, 2, 3]])
    source = LookupProposals(block=4, store=store)
    assert source.get_candidates([5, 6, 9, 5, 6], 4).tokens == [9, 5, 6]  # the text's own match first
    assert source.get_candidates([4, 7, 8], 4).tokens == [1, 2]  # else the store's, at most store_block (2) of them
    assert LookupProposals(block=4, store=store, store_block=4).get_candidates([4, 7, 8], 4).tokens == [1, 2, 3]
    assert LookupProposals(block=4).get_candidates([4, 7, 8], 4).tokens == []
    assert proposal_source(DraftConfig(speculate="lookup"), 1, store=store).store is store

    class Block:
        def proposals(self, block):
            return "block drafter"

    both = proposal_source(DraftConfig(speculate="both"), 1, block_drafter=Block(), store=store)
    lookup, block = both.sources  # the block drafter fills what the text lacks
    assert lookup.store is None and block == "block drafter"


def test_a_store_never_changes_the_draft(tiny_model):
    model, tokenizer = tiny_model
    drafter = Drafter(model.to(torch.float64), tokenizer)
    prompt = "The lighthouse keeper walked"
    config = DraftConfig(max_new_tokens=24, ignore_eos=True)
    plain = drafter.generate(prompt, DraftConfig(max_new_tokens=24, ignore_eos=True, speculate="off"))
    truth = plain.token_ids[0].tolist()
    # the draft's own text, with every third token wrong, so that stored proposals are kept in part
    noisy = [t if i % 3 else (t + 1) % len(tokenizer) for i, t in enumerate(truth)]
    drafter.token_store = TokenStore.from_sequences([noisy, truth[:12]], "tiny", tokenizer)
    stored = drafter.generate(prompt, config)
    assert stored.token_ids.tolist() == plain.token_ids.tolist()
    assert stored.speculation.accepted > 0 and stored.speculation.passes < plain.speculation.passes
    drafter.token_store = None
    alone = drafter.generate(prompt, config)
    assert alone.token_ids.tolist() == plain.token_ids.tolist() and alone.speculation.proposed < stored.speculation.proposed


def test_recipe_builds_a_store_and_generate_reads_it(tiny_model_dir, tmp_path):
    out = tmp_path / "store"
    args = ["finetune", "recipes/lookup-store.yaml", f"lookup_store.base={tiny_model_dir}", "lookup_store.prompts=3",
            "lookup_store.max_new_tokens=6", "lookup_store.eval_prompts=2", "lookup_store.eval_tokens=6", "--output", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    # the tiny model's short context leaves the paper prompts out
    assert summary["tokens"] > 0 and 1 <= summary["prompts"] <= 3 and summary["validation_prompts"] >= 1
    assert min(summary["tokens_per_pass"]["lookup"], summary["tokens_per_pass"]["lookup_with_store"]) >= 1.0
    assert "tokens per verify pass" in (out / "README.md").read_text()
    base = ["generate", "one two three", "--draft-model", str(tiny_model_dir), "--refine-steps", "0", "--max-new-tokens", "6", "--json"]
    for store in (str(out), "none"):
        generated = CliRunner().invoke(cli, base + ["--lookup-store", store])
        assert generated.exit_code == 0, generated.output
    missing = CliRunner().invoke(cli, base + ["--lookup-store", str(tmp_path / "nowhere")])
    assert missing.exit_code != 0 and "does not exist" in missing.output and "Traceback" not in missing.output
    bad = CliRunner().invoke(cli, ["finetune", "recipes/lookup-store.yaml", "lookup_store.promts=3"])
    assert bad.exit_code == 2 and "unknown recipe key 'promts'" in bad.output
