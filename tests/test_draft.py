"""The Drafter on a tiny random Llama that uses the default tokenizer."""

import pytest
import torch

from hybrid.drafting.drafter import DraftConfig, Drafter
from hybrid.errors import HybridError


@pytest.fixture()
def drafter(tiny_model):
    model, tokenizer = tiny_model
    return Drafter(model, tokenizer)


def test_greedy_matches_hf_generate(drafter):
    """Our KV-cache loop must pick exactly the tokens model.generate picks."""
    config = DraftConfig(max_new_tokens=12, ignore_eos=True)
    draft = drafter.generate("The history of Rome", config)
    ids, mask = drafter.encode_prompts(["The history of Rome"])
    reference = drafter.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, min_new_tokens=12, do_sample=False)
    assert draft.token_ids[0].tolist() == reference[0, ids.shape[1]:].tolist()


def test_logprobs_are_the_models(drafter):
    draft = drafter.generate("Hello there", DraftConfig(max_new_tokens=6, ignore_eos=True))
    full = torch.cat([draft.prompt_ids, draft.token_ids], dim=1)
    with torch.no_grad():
        logits = drafter.model(full).logits[0, draft.prompt_ids.shape[1] - 1 : -1]
    expected = torch.log_softmax(logits, -1).gather(-1, draft.token_ids[0][:, None]).squeeze(-1)
    assert torch.allclose(draft.logprobs[0], expected, atol=1e-4)
    assert (draft.logprobs <= 0).all()


def test_batch_equals_one_by_one(drafter):
    prompts = ["A short one", "A much longer prompt about the history of the Roman empire"]
    config = DraftConfig(max_new_tokens=8, ignore_eos=True)
    batch = drafter.generate(prompts, config)
    for row, prompt in enumerate(prompts):
        single = drafter.generate(prompt, config)
        assert batch.token_ids[row].tolist() == single.token_ids[0].tolist()


def test_seed_makes_sampling_repeatable(drafter):
    config = DraftConfig(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=7, ignore_eos=True)
    first = drafter.generate("Once upon a time", config).token_ids
    again = drafter.generate("Once upon a time", config).token_ids
    other = drafter.generate("Once upon a time", DraftConfig(max_new_tokens=10, temperature=1.0, seed=8, ignore_eos=True)).token_ids
    assert first.tolist() == again.tolist()
    assert first.tolist() != other.tolist()


def test_stop_string_ends_text(drafter):
    draft = drafter.generate("Count", DraftConfig(max_new_tokens=20, ignore_eos=True))
    word = draft.texts[0].split()[1] if len(draft.texts[0].split()) > 1 else draft.texts[0][:2]
    stopped = drafter.generate("Count", DraftConfig(max_new_tokens=20, ignore_eos=True, stop=(word,)))
    assert word not in stopped.texts[0]
    assert stopped.lengths[0] < 20


def test_timings_are_filled(drafter):
    draft = drafter.generate("Timing", DraftConfig(max_new_tokens=5, ignore_eos=True))
    assert draft.timings.new_tokens == 5
    assert draft.timings.prefill_s > 0 and draft.timings.decode_s > 0 and draft.timings.tokens_per_s > 0


def test_chat_template_applied_and_optional(tiny_model):
    model, tokenizer = tiny_model
    with_template = Drafter(model, tokenizer).format_prompt("hi")
    raw = Drafter(model, tokenizer, use_chat_template=False).format_prompt("hi")
    assert "<|im_start|>" in with_template and raw == "hi"


@pytest.mark.parametrize("prompt", ["", "   \n"])
def test_empty_prompt_refused(drafter, prompt):
    with pytest.raises(HybridError, match="empty"):
        drafter.generate(prompt, DraftConfig(max_new_tokens=4))


def test_too_long_prompt_refused(drafter):
    with pytest.raises(HybridError, match="context"):
        drafter.generate("word " * 400, DraftConfig(max_new_tokens=4))


@pytest.mark.parametrize("config", [DraftConfig(max_new_tokens=0), DraftConfig(temperature=-1), DraftConfig(top_p=0)])
def test_bad_numbers_refused(drafter, config):
    with pytest.raises(HybridError):
        drafter.generate("x", config)


def test_cache_keyword_names_a_real_parameter(tiny_model):
    """transformers renamed past_key_values to cache in 5.x; an unknown keyword would be dropped silently."""
    import inspect

    from hybrid.models import cache_keyword

    model, _ = tiny_model
    layer = model.model.layers[0]
    assert cache_keyword(model) in inspect.signature(model.forward).parameters
    assert cache_keyword(layer) in inspect.signature(layer.forward).parameters


@pytest.mark.parametrize("batch", [1, 3])
def test_last_position_logits_equal_the_models_own(batch):
    """The prompt pass that feeds the head a 2-D input (one prompt) gives the logits and cache of
    `model(..., logits_to_keep=1)`, for a plain model and for a refiner's PEFT model with its adapters on."""
    from transformers import DynamicCache

    from hybrid.models import last_position_logits
    from tiny import make_refiner

    base, refiner = make_refiner(vocab=100)
    ids = torch.randint(3, 100, (batch, 7), generator=torch.Generator().manual_seed(batch))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # left padding on one row
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    for model in (base, refiner.model):
        theirs, ours = DynamicCache(config=base.config), DynamicCache(config=base.config)
        expected = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                         past_key_values=theirs).logits[:, -1].float()
        got = last_position_logits(model, ours, input_ids=ids, attention_mask=mask, position_ids=positions)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
        assert all(torch.equal(a.keys, b.keys) for a, b in zip(theirs.layers, ours.layers))
    with refiner.adapter_disabled():
        plain = last_position_logits(refiner.model, DynamicCache(config=base.config), input_ids=ids, attention_mask=mask,
                                     position_ids=positions)
    assert not torch.allclose(plain, got)  # the adapters were on above
