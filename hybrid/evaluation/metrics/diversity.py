"""Lexical diversity of generated text: unigram entropy and repeated n-gram rates.

Tokens are lower-cased words plus punctuation marks (``hybrid.text.units.tokens_with_punctuation``).
The repeated n-gram rate for n is the share of the text's n-grams that repeat an n-gram seen earlier in the
same text: 0 for text without repetition, approaching 1 for a loop.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

from hybrid.errors import HybridError
from hybrid.results import Result
from hybrid.text.units import mean_or_none, ngrams, tokens_with_punctuation

REPEAT_ORDERS = (2, 3, 4)


@dataclass(frozen=True)
class DiversityResult(Result):
    """Diversity of one text (or the mean over texts for ``aggregate_diversity``)."""

    unigram_entropy_bits: float | None
    repeat_rate_2: float | None
    repeat_rate_3: float | None
    repeat_rate_4: float | None
    tokens: int


def unigram_entropy_bits(tokens: Sequence[str]) -> float | None:
    """Shannon entropy (bits) of the token distribution; None for an empty sequence."""
    if not tokens:
        return None
    counts = Counter(tokens)
    total = len(tokens)
    return -sum((c / total) * math.log2(c / total) for c in counts.values()) + 0.0


def repeated_ngram_rate(tokens: Sequence[str], n: int) -> float | None:
    """Share of n-grams that are repeats of an earlier n-gram; None when there are fewer than n tokens."""
    grams = ngrams(tokens, n)
    if not grams:
        return None
    return (len(grams) - len(set(grams))) / len(grams)


def score_diversity(text: str) -> DiversityResult:
    """Entropy and repeat rates of one text."""
    tokens = tokens_with_punctuation(text)
    rates = {n: repeated_ngram_rate(tokens, n) for n in REPEAT_ORDERS}
    return DiversityResult(
        unigram_entropy_bits=unigram_entropy_bits(tokens),
        repeat_rate_2=rates[2],
        repeat_rate_3=rates[3],
        repeat_rate_4=rates[4],
        tokens=len(tokens),
    )


def aggregate_diversity(results: Iterable[DiversityResult]) -> DiversityResult:
    """Mean of each figure over texts (texts where a figure is None are left out of that figure)."""
    results = list(results)
    if not results:
        raise HybridError("no diversity results to aggregate")
    return DiversityResult(
        unigram_entropy_bits=mean_or_none(r.unigram_entropy_bits for r in results),
        repeat_rate_2=mean_or_none(r.repeat_rate_2 for r in results),
        repeat_rate_3=mean_or_none(r.repeat_rate_3 for r in results),
        repeat_rate_4=mean_or_none(r.repeat_rate_4 for r in results),
        tokens=sum(r.tokens for r in results),
    )
