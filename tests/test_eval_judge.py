"""Judge perplexity: batching, context handling and the converted-cache logic (fast, tiny random model),
and the real Gemma-3-270m judge preferring real text over shuffled words (slow)."""

import math

import pytest
import torch

from hybrid.errors import HybridError
from hybrid.evaluation.metrics import judge_cache
from hybrid.evaluation.metrics.judge import Judge, JudgeConfig


@pytest.fixture(scope="module")
def tiny_judge_folder(tmp_path_factory):
    """A tiny random Llama saved with the (local) MiniLM tokenizer: a causal LM given by folder path."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from hybrid.evaluation.metrics.minilm import minilm_folder

    folder = tmp_path_factory.mktemp("tiny-judge")
    tokenizer = AutoTokenizer.from_pretrained(minilm_folder())
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_batched_equals_one_by_one(tiny_judge_folder):
    judge = Judge(config=JudgeConfig(model=tiny_judge_folder, tokens_per_batch=64))
    texts = ["a short one", "a much longer sentence about rivers, towns and bridges over the sea", "mid length text"]
    contexts = ["context here", None, "another prompt that is long"]
    together = judge.perplexity(texts, contexts)
    alone = [judge.perplexity([t], [c])[0] for t, c in zip(texts, contexts)]
    assert together == pytest.approx(alone, rel=1e-4)
    assert all(math.isfinite(p) and p > 1 for p in together)


def test_context_is_conditioned_on_but_not_scored(tiny_judge_folder):
    judge = Judge(config=JudgeConfig(model=tiny_judge_folder))
    text = "the river flows to the sea"
    n_text = len(judge.tokenizer(text, add_special_tokens=False).input_ids)
    for context in (None, "a prompt", "a much longer prompt with many more words in it"):
        assert len(judge.token_log_likelihoods([text], [context])[0]) == n_text
    no_ctx, ctx = judge.perplexity([text, text], [None, "a prompt"])
    assert no_ctx != pytest.approx(ctx)


def test_long_context_is_cut_from_the_left(tiny_judge_folder):
    judge = Judge(config=JudgeConfig(model=tiny_judge_folder, max_length=24))
    ids, scored_from = judge.encode_pair("the end of the text", "word " * 100)
    assert len(ids) == 24 and 1 <= scored_from < 24


def test_context_count_must_match(tiny_judge_folder):
    judge = Judge(config=JudgeConfig(model=tiny_judge_folder))
    with pytest.raises(HybridError):
        judge.perplexity(["a", "b"], ["only one"])


def test_unknown_model_is_a_user_error(tmp_path):
    with pytest.raises(HybridError):
        Judge(str(tmp_path / "no-such-model"))


def test_half_written_cache_is_rebuilt(tmp_path, monkeypatch):
    calls = []

    def fake_convert(out):
        calls.append(out)
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(judge_cache, "_convert_gemma_gguf", fake_convert)
    final = tmp_path / "judge" / judge_cache.GEMMA_FOLDER_NAME
    final.mkdir(parents=True)
    (final / "model.safetensors").write_text("truncated")  # no marker: a crash mid-write
    assert judge_cache.gemma_judge_folder(tmp_path) == final
    assert len(calls) == 1 and judge_cache.is_complete(final)
    assert not (final / "model.safetensors").exists()
    assert judge_cache.gemma_judge_folder(tmp_path) == final  # complete: reused, not rebuilt
    assert len(calls) == 1
    assert [p.name for p in (tmp_path / "judge").iterdir()] == [judge_cache.GEMMA_FOLDER_NAME]  # temp dirs gone


def test_judge_cache_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("HYBRID_CACHE", str(tmp_path / "c"))
    monkeypatch.setattr(judge_cache, "_convert_gemma_gguf", lambda out: (out / "config.json").write_text("{}"))
    assert judge_cache.gemma_judge_folder() == tmp_path / "c" / "judge" / judge_cache.GEMMA_FOLDER_NAME


@pytest.mark.slow
def test_gemma_judge_prefers_real_text_over_shuffled():
    from hybrid.evaluation.harness.validate import held_out_passages, validate_judge

    result = validate_judge(Judge(), passages=held_out_passages(aclsum_abstracts=0)[:3])
    assert result.real_lower_share == 1.0
    assert result.mean_shuffled_perplexity > 3 * result.mean_real_perplexity
