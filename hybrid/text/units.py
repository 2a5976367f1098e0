"""Small text helpers shared by the metrics: a rule-based sentence splitter, word tokens and n-grams."""

from __future__ import annotations

import re
from typing import Iterable, Sequence

# Words whose trailing period does not end a sentence.
_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "cf", "al", "fig", "figs",
    "eq", "no", "vol", "approx", "dept", "inc", "ltd", "co", "corp", "mt", "u.s", "u.k", "sec", "ch",
}
_BOUNDARY = re.compile(r"[.!?]+[\"')\]]*\s+|\n\s*\n+")
_WORD = re.compile(r"\w+(?:[-'’]\w+)*")
_TOKEN = re.compile(r"\w+(?:[-'’]\w+)*|[^\w\s]")


def split_sentences(text: str) -> list[str]:
    """Split text into sentences at . ! ? (not after common abbreviations or initials) and at blank lines."""
    sentences: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        end = match.end()
        if "\n" not in match.group(0) and match.group(0).lstrip().startswith("."):
            before = text[start : match.start()].split()
            last = before[-1].lower().rstrip(".") if before else ""
            if last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha()):
                continue
            following = text[end : end + 1]
            if following and following.islower():  # "... approx. twice as ..." is one sentence
                continue
        piece = text[start:end].strip()
        if piece:
            sentences.append(piece)
        start = end
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences


def word_tokens(text: str, lower: bool = True) -> list[str]:
    """Words (letters/digits, keeping inner hyphens and apostrophes), without punctuation."""
    words = _WORD.findall(text)
    return [w.lower() for w in words] if lower else words


def tokens_with_punctuation(text: str, lower: bool = True) -> list[str]:
    """Words plus each punctuation mark as its own token."""
    tokens = _TOKEN.findall(text)
    return [t.lower() for t in tokens] if lower else tokens


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """All contiguous n-grams of ``tokens`` (empty when there are fewer than n tokens)."""
    if n < 1:
        raise ValueError("n must be at least 1")
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def mean_or_none(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are not None, or None when there are none."""
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None
