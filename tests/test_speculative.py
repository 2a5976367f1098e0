"""Speculative drafting (hybrid.drafting): proposals checked in one pass give the drafter's own text and everything the
refine stage reads from drafting, in fewer passes."""

import pytest
import torch

from hybrid.config import DraftConfig
from hybrid.drafting.drafter import Drafter
from hybrid.drafting.proposals import LookupProposals, Proposal, proposal_source
from hybrid.errors import HybridError


class Planted:
    """Proposes the true continuation (a plain draft's tokens) with every `every`-th proposal wrong, so that passes keep
    some proposals and reject others."""

    name = "planted"

    def __init__(self, truth: list[int], prompt_len: int, every: int = 3, block: int = 5):
        self.truth, self.prompt_len, self.every, self.block = truth, prompt_len, every, block
        self.calls = 0

    def get_candidates(self, context, limit):
        done = len(context) - self.prompt_len
        tokens = self.truth[done: done + min(limit, self.block)]
        self.calls += 1
        if len(tokens) > 1 and self.calls % 2:
            wrong = min(self.every, len(tokens)) - 1
            tokens[wrong] = (tokens[wrong] + 1) % 1000
        return Proposal(tokens)

    def update_candidate_strategy(self, proposed, accepted):
        pass


@pytest.fixture()
def drafter64(tiny_model):
    model, tokenizer = tiny_model
    return Drafter(model.to(torch.float64), tokenizer)


def _draft(drafter, prompt, source=None, **settings):
    settings = {"max_new_tokens": 24, "ignore_eos": True, "keep_distributions": True, **settings}
    return drafter.generate(prompt, DraftConfig(**settings), record=(2, (0, 1)), source=source)


def test_speculative_draft_equals_plain_in_float64(drafter64):
    prompt = "one two three one two three one two three"
    plain = _draft(drafter64, prompt, speculate="off")
    truth = plain.token_ids[0].tolist()
    spec = _draft(drafter64, prompt, source=Planted(truth, plain.prompt_ids.shape[1]))
    assert spec.token_ids.tolist() == plain.token_ids.tolist()
    assert spec.lengths == plain.lengths
    assert spec.speculation.accepted > 0 and spec.speculation.accepted < spec.speculation.proposed
    assert spec.speculation.passes < plain.speculation.passes
    assert torch.allclose(spec.logprobs, plain.logprobs, atol=1e-5)
    assert torch.allclose(spec.distributions, plain.distributions, atol=1e-5)
    # the cache and the lower layers' states hold exactly what plain drafting left there
    assert spec.cache.get_seq_length() == plain.cache.get_seq_length()
    for a, b in zip(spec.cache.layers, plain.cache.layers):
        assert torch.allclose(a.keys, b.keys, atol=1e-6) and torch.allclose(a.values, b.values, atol=1e-6)
    assert spec.lower.inputs.tolist() == plain.lower.inputs.tolist()
    for index in (0, 1):
        assert spec.lower.outputs[index].shape == plain.lower.outputs[index].shape
        assert torch.allclose(spec.lower.outputs[index], plain.lower.outputs[index], atol=1e-6)


def test_lookup_draft_equals_plain_with_an_end_token(tiny_model):
    model, tokenizer = tiny_model
    drafter = Drafter(model.to(torch.float64), tokenizer)
    plain = _draft(drafter, "a b a b a b a b", speculate="off", ignore_eos=False, max_new_tokens=40)
    # an end token the lookup proposes can end the draft in the middle of a block
    truth = plain.token_ids[0].tolist()
    drafter.tokenizer.eos_token_id  # the tiny model's end id
    spec = _draft(drafter, "a b a b a b a b", source=Planted(truth, plain.prompt_ids.shape[1], every=9, block=8),
                  ignore_eos=False, max_new_tokens=40)
    assert spec.token_ids.tolist() == plain.token_ids.tolist() and spec.lengths == plain.lengths
    assert spec.cache.get_seq_length() == plain.cache.get_seq_length()
    lookup = _draft(drafter, "a b a b a b a b", speculate="lookup", ignore_eos=False, max_new_tokens=40)
    assert lookup.token_ids.tolist() == plain.token_ids.tolist() and lookup.speculation.source == "lookup"


def test_batches_decode_plainly(tiny_model):
    model, tokenizer = tiny_model
    drafter = Drafter(model, tokenizer)
    draft = drafter.generate(["one two one two", "three"], DraftConfig(max_new_tokens=8, ignore_eos=True, speculate="lookup"))
    assert draft.speculation.source == "off" and draft.speculation.tokens_per_pass == 1.0


def test_lookup_proposes_what_followed_the_latest_match():
    source = LookupProposals(block=4, max_ngram=2, min_ngram=1)
    assert source.get_candidates([5, 6, 7, 8, 9, 5, 6, 1, 2, 5, 6], 10).tokens == [1, 2, 5, 6]
    assert source.get_candidates([5, 6, 7, 8, 9, 5, 6, 1, 2, 5, 6], 2).tokens == [1, 2]
    assert source.get_candidates([1, 2, 3, 4], 10).tokens == []  # no earlier occurrence
    assert source.get_candidates([3, 9, 4, 9], 10).tokens == [4, 9]  # a 1-gram match when no 2-gram matches
    assert LookupProposals().get_candidates([3, 9, 4, 9], 10).tokens == []  # by default a match needs 2 tokens


def test_lookup_block_adapts():
    source = LookupProposals(block=4, max_block=8, adaptive=True)
    source.update_candidate_strategy(4, 4)
    assert source.block == 6
    source.update_candidate_strategy(6, 2)
    assert source.block == 5
    fixed = LookupProposals(block=4)
    fixed.update_candidate_strategy(4, 4)
    assert fixed.block == 4


def test_wary_lookup_needs_a_longer_match_after_a_rejection():
    source = LookupProposals(block=4, max_ngram=3, wary=True)
    context = [7, 8, 1, 2, 9, 9, 7, 8]  # only a 2-gram match: [7, 8] -> [1, 2, ...]
    assert source.get_candidates(context, 10).tokens == [1, 2, 9, 9]
    source.update_candidate_strategy(4, 0)
    assert source.get_candidates(context, 10).tokens == []  # now a 3-gram is needed
    assert source.get_candidates([5, 7, 8, 1, 5, 7, 8], 10).tokens == [1, 5, 7, 8]
    source.update_candidate_strategy(4, 2)
    assert source.get_candidates(context, 10).tokens == [1, 2, 9, 9]
    plain = LookupProposals(block=4, max_ngram=3)
    plain.update_candidate_strategy(4, 0)
    assert plain.get_candidates(context, 10).tokens == [1, 2, 9, 9]


def test_speculate_setting_picks_the_source(monkeypatch):
    import hybrid.models as models

    assert proposal_source(DraftConfig(speculate="off"), 1) is None
    assert proposal_source(DraftConfig(speculate="lookup"), 2) is None
    assert isinstance(proposal_source(DraftConfig(speculate="auto"), 1), LookupProposals)
    assert proposal_source(DraftConfig(speculate="lookup", speculate_block=3), 1).block == 3
    bf16 = torch.nn.Linear(2, 2).to(torch.bfloat16)
    bf16.dtype, bf16.device = torch.bfloat16, torch.device("cpu")
    monkeypatch.setattr(models, "native_bf16_cpu", lambda: False)
    assert proposal_source(DraftConfig(), 1, bf16) is None  # auto: plain where bf16 products are emulated
    assert proposal_source(DraftConfig(speculate="lookup"), 1, bf16) is not None
    monkeypatch.setattr(models, "native_bf16_cpu", lambda: True)
    assert isinstance(proposal_source(DraftConfig(), 1, bf16), LookupProposals)
    with pytest.raises(HybridError, match="unknown speculate"):
        DraftConfig(speculate="tree").validate()


class Always:
    """Always proposes one fixed token: a biased source that speculative sampling must not let bias the text."""

    name = "always"

    def __init__(self, token):
        self.token = token

    def get_candidates(self, context, limit):
        return Proposal([self.token] * min(limit, 2))

    def update_candidate_strategy(self, proposed, accepted):
        pass


class Digits:
    """The little a Drafter asks of a tokenizer, for a 16-token model."""

    pad_token_id, eos_token_id, chat_template = 0, 15, None

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


def test_speculative_sampling_keeps_the_drafters_distribution():
    """Tokens 2 and 3 sampled under a source that always proposes the same token follow the drafter's own distribution:
    total variation against plain sampling within what 2000 draws each allow (a source that biased the text would put
    its token's share near 1)."""
    from tiny import build_tiny_llama

    model = build_tiny_llama(16, seed=4)
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)  # a peaked distribution, so that p / q and the residual matter
    drafter = Drafter(model, Digits())
    config = dict(max_new_tokens=3, ignore_eos=True, temperature=1.0)
    favourite = int(drafter.generate_ids([[3, 4, 5]], DraftConfig(max_new_tokens=2, ignore_eos=True)).token_ids[0, 1])
    draws = 2000
    plain, spec = [], []
    for seed in range(draws):
        plain.append(drafter.generate_ids([[3, 4, 5]], DraftConfig(seed=seed, speculate="off", **config)).token_ids[0, 1:].tolist())
        drafted = drafter.generate_ids([[3, 4, 5]], DraftConfig(seed=seed, **config), source=Always(favourite))
        spec.append(drafted.token_ids[0, 1:].tolist())
    assert drafted.speculation.proposed > 0
    for position in (0, 1):
        a = torch.bincount(torch.tensor([row[position] for row in plain]), minlength=16).double() / draws
        b = torch.bincount(torch.tensor([row[position] for row in spec]), minlength=16).double() / draws
        assert 0.5 * float((a - b).abs().sum()) < 0.1, (position, a, b)
        assert abs(float(a[favourite] - b[favourite])) < 0.05


@pytest.mark.parametrize("settings", [{"repetition_penalty": 1.5}, {"no_repeat_ngram_size": 2}])
def test_repetition_rules_match_hf_generate_plain_and_speculative(tiny_model, settings):
    model, tokenizer = tiny_model
    drafter = Drafter(model.to(torch.float64), tokenizer)
    prompt = "one two one two one two one two"
    ids, mask = drafter.encode_prompts([prompt])
    reference = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=20, min_new_tokens=20, do_sample=False,
                               **settings)[0, ids.shape[1]:].tolist()
    plain = drafter.generate(prompt, DraftConfig(max_new_tokens=20, ignore_eos=True, speculate="off", **settings))
    spec = drafter.generate(prompt, DraftConfig(max_new_tokens=20, ignore_eos=True, **settings),
                            source=Planted(reference, ids.shape[1], every=2))
    unruled = drafter.generate(prompt, DraftConfig(max_new_tokens=20, ignore_eos=True, speculate="off"))
    assert plain.token_ids[0].tolist() == reference
    assert spec.token_ids[0].tolist() == reference and spec.speculation.accepted > 0
    assert unruled.token_ids[0].tolist() != reference  # the rule changed this text


def test_cli_speculate_reports_tokens_per_pass(tiny_model_dir, tiny_refiner_dir):
    import json

    from click.testing import CliRunner

    from hybrid.cli import cli

    prompt = "one two three one two three one two three one two three"
    base = ["generate", prompt, "--draft-model", str(tiny_model_dir), "--max-new-tokens", "12", "--refine-steps", "0"]
    spec = CliRunner().invoke(cli, base + ["--speculate", "lookup", "--json"])
    plain = CliRunner().invoke(cli, base + ["--speculate", "off", "--json"])
    assert spec.exit_code == 0 and plain.exit_code == 0, spec.output + plain.output
    spec, plain = json.loads(spec.output), json.loads(plain.output)
    assert spec["speculation"]["source"] == "lookup" and plain["speculation"]["source"] == "off"
    assert spec["token_ids"] == plain["token_ids"]
    assert plain["speculation"]["tokens_per_pass"] == 1.0 and spec["speculation"]["passes"] <= plain["speculation"]["passes"]
    traced = CliRunner().invoke(cli, ["generate", prompt, "--draft-model", str(tiny_model_dir), "--refiner", str(tiny_refiner_dir),
                                      "--max-new-tokens", "12", "--refine-steps", "1", "--show-trace"])
    assert traced.exit_code == 0 and "lookup speculation" in traced.output and "tokens per pass" in traced.output
    assert "proposal 1:" in traced.output  # each pass's proposals, kept and rejected
    logged = json.loads(CliRunner().invoke(cli, base + ["--speculate", "lookup", "--json", "--show-trace"]).output)["speculation"]
    assert "proposals" not in spec["speculation"] and logged["proposals"]
    assert sum(p["kept"] for p in logged["proposals"]) == logged["accepted"]
    assert sum(len(p["ids"]) for p in logged["proposals"]) == logged["proposed"]
    bad = CliRunner().invoke(cli, base + ["--speculate", "tree"])
    assert bad.exit_code == 2 and "tree" in bad.output and "Traceback" not in bad.output
    auto = CliRunner().invoke(cli, base + ["--dtype", "auto"])
    assert auto.exit_code == 0, auto.output
