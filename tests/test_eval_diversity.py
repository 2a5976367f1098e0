"""Diversity: unigram entropy and repeated n-gram rates."""

import math

import pytest

from hybrid.evaluation.metrics.diversity import aggregate_diversity, repeated_ngram_rate, score_diversity, unigram_entropy_bits

TEXT = "The river flows through the old town, past the market and under three stone bridges before the sea."


def test_repetition_raises_repeat_rates_and_lowers_entropy():
    once = score_diversity(TEXT)
    looped = score_diversity(" ".join([TEXT] * 4))
    assert once.repeat_rate_2 < 0.1 and once.repeat_rate_4 == 0.0
    for n in (2, 3, 4):
        assert getattr(looped, f"repeat_rate_{n}") > 0.6
    degenerate = score_diversity("the the the the the the the the")
    assert degenerate.unigram_entropy_bits == 0.0
    assert degenerate.unigram_entropy_bits < once.unigram_entropy_bits


def test_entropy_of_uniform_tokens():
    assert unigram_entropy_bits(["a", "b", "c", "d"]) == pytest.approx(2.0)
    assert unigram_entropy_bits(list("abcdefgh")) == pytest.approx(math.log2(8))
    assert unigram_entropy_bits([]) is None


def test_repeated_ngram_rate_counts_repeats():
    assert repeated_ngram_rate(["a", "b", "a", "b"], 2) == pytest.approx(1 / 3)  # ab, ba, ab
    assert repeated_ngram_rate(["a", "b"], 3) is None


def test_aggregate_means_and_skips_none():
    pooled = aggregate_diversity([score_diversity("one two"), score_diversity("a a a a a")])
    assert pooled.repeat_rate_4 == pytest.approx(1 / 2)  # only the second text has 4-grams
    assert pooled.tokens == 7
