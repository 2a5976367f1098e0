"""Source-grounding factuality: how much of what an output states can be found in its source text.

Three deterministic checks, each a precision over the output's distinct items:
  * entities: capitalised spans that do not start a sentence, plus acronyms anywhere (``NASA``, ``BERT``, ``GPUs``);
    supported when every word of the span occurs in the source (case-insensitive);
  * numbers: integers, decimals, percentages and years; supported when the same value occurs in the source
    (``1,000`` == ``1000``, ``2.50`` == ``2.5``, ``20%`` == ``20 %`` == ``20 percent``, ``three`` in the source == ``3``);
  * n-grams (n=3 by default): lower-cased word n-grams; supported when the source contains the same n-gram.
    ``1 - ngram_precision`` is the share of novel n-grams.
A precision is ``None`` when the output has no item of that kind.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

from hybrid.errors import HybridError
from hybrid.evaluation.text_units import ngrams, split_sentences, word_tokens

_CAP_WORD = r"[A-Z][\w'’-]*"
_CAP_SPAN = re.compile(rf"(?<![\w'’-]){_CAP_WORD}(?:\s+{_CAP_WORD})*")
_ACRONYM = re.compile(r"(?<![\w-])[A-Z][A-Z0-9&-]*[A-Z0-9](?:s)?(?![\w-])")
_NUMBER = re.compile(
    r"(?<![\w.,])(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?:\s?(%|percent\b|per cent\b))?(?!\d)"
)
_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000,
    "million": 1000000, "billion": 1000000000, "dozen": 12, "half": 0.5, "twice": 2,
}
# Capitalised words that are not names when they open a span mid-sentence (e.g. after a colon).
_NOT_NAMES = {"i", "i'm", "i've", "i'd", "i'll"}


@dataclass(frozen=True)
class GroundingResult:
    """Precisions (None when the output has no item of that kind) and the counts behind them."""

    entity_precision: float | None
    number_precision: float | None
    ngram_precision: float | None
    entities: int
    entities_supported: int
    numbers: int
    numbers_supported: int
    ngrams: int
    ngrams_supported: int
    ngram_n: int = 3
    unsupported_entities: tuple[str, ...] = field(default=())
    unsupported_numbers: tuple[str, ...] = field(default=())

    @property
    def novel_ngram_rate(self) -> float | None:
        """Share of the output's distinct n-grams that the source does not contain."""
        return None if self.ngram_precision is None else 1.0 - self.ngram_precision

    def to_dict(self) -> dict:
        out = asdict(self)
        out["novel_ngram_rate"] = self.novel_ngram_rate
        out["unsupported_entities"] = list(self.unsupported_entities)
        out["unsupported_numbers"] = list(self.unsupported_numbers)
        return out


def normalise_number(raw: str) -> str:
    """Canonical string of a number: no thousands separators, no trailing decimal zeros (``1,000.50`` -> ``1000.5``)."""
    text = raw.replace(",", "").strip()
    if text.startswith("."):
        text = "0" + text
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    text = text.lstrip("0") or "0"
    if text.startswith("."):
        text = "0" + text
    return text


def extract_numbers(text: str) -> list[str]:
    """Distinct numbers in order of first appearance, as written (``"1,000"``, ``"20%"``, ``"3.5"``, ``"1969"``)."""
    seen: dict[str, str] = {}
    for match in _NUMBER.finditer(text):
        value = normalise_number(match.group(1))
        seen.setdefault(value, match.group(0).strip())
    return list(seen.values())


def number_values(text: str, include_words: bool = False) -> set[str]:
    """Canonical values of all numbers in ``text``; with ``include_words``, also small number words (``three``)."""
    values = {normalise_number(m.group(1)) for m in _NUMBER.finditer(text)}
    if include_words:
        for word in word_tokens(text):
            if word in _NUMBER_WORDS:
                values.add(normalise_number(str(_NUMBER_WORDS[word])))
    return values


def extract_entities(text: str) -> list[str]:
    """Distinct entity strings: capitalised spans not at a sentence start, and acronyms anywhere."""
    found: dict[str, str] = {}
    for sentence in split_sentences(text):
        first_word = re.search(r"[A-Za-z0-9]", sentence)
        opening = first_word.start() if first_word else 0
        for match in _CAP_SPAN.finditer(sentence):
            words = match.group(0).split()
            if match.start() == opening:
                words = words[1:]  # the sentence's first word is capitalised anyway
            while words and words[0].lower() in _NOT_NAMES:
                words = words[1:]
            if words:
                span = " ".join(words)
                found.setdefault(span.lower(), span)
        for match in _ACRONYM.finditer(sentence):
            found.setdefault(match.group(0).lower(), match.group(0))
    # An acronym already covered by a longer span is not counted twice.
    spans = list(found.values())
    kept = [s for s in spans if not (" " not in s and any(s in other.split() for other in spans if other != s))]
    return kept


def _entity_supported(entity: str, source_words: set[str]) -> bool:
    words = word_tokens(entity)
    if not words:
        return True
    for word in words:
        if word in source_words:
            continue
        if word.endswith("s") and word[:-1] in source_words:  # "GPUs" vs "GPU"
            continue
        if word.endswith("'s") and word[:-2] in source_words:
            continue
        return False
    return True


def score_grounding(output: str, source: str, ngram_n: int = 3) -> GroundingResult:
    """Grounding of one output in one source text."""
    if ngram_n < 1:
        raise HybridError(f"ngram_n must be at least 1, got {ngram_n}")
    source_words = set(word_tokens(source))

    entities = extract_entities(output)
    bad_entities = tuple(e for e in entities if not _entity_supported(e, source_words))

    numbers = extract_numbers(output)
    source_values = number_values(source, include_words=True)
    bad_numbers = tuple(n for n in numbers if normalise_number(_NUMBER.match(n).group(1)) not in source_values)

    out_ngrams = set(ngrams(word_tokens(output), ngram_n))
    source_ngrams = set(ngrams(word_tokens(source), ngram_n))
    supported_ngrams = len(out_ngrams & source_ngrams)

    return GroundingResult(
        entity_precision=_share(len(entities) - len(bad_entities), len(entities)),
        number_precision=_share(len(numbers) - len(bad_numbers), len(numbers)),
        ngram_precision=_share(supported_ngrams, len(out_ngrams)),
        entities=len(entities),
        entities_supported=len(entities) - len(bad_entities),
        numbers=len(numbers),
        numbers_supported=len(numbers) - len(bad_numbers),
        ngrams=len(out_ngrams),
        ngrams_supported=supported_ngrams,
        ngram_n=ngram_n,
        unsupported_entities=bad_entities,
        unsupported_numbers=bad_numbers,
    )


def score_grounding_batch(outputs: Sequence[str], sources: Sequence[str], ngram_n: int = 3) -> list[GroundingResult]:
    """``score_grounding`` for aligned lists of outputs and sources."""
    if len(outputs) != len(sources):
        raise HybridError(f"got {len(outputs)} outputs but {len(sources)} sources: pass one source per output")
    return [score_grounding(o, s, ngram_n) for o, s in zip(outputs, sources)]


def aggregate_grounding(results: Iterable[GroundingResult]) -> GroundingResult:
    """Pool several results (micro-average: counts are summed, then divided)."""
    results = list(results)
    if not results:
        raise HybridError("no grounding results to aggregate")
    total = {k: sum(getattr(r, k) for r in results) for k in
             ("entities", "entities_supported", "numbers", "numbers_supported", "ngrams", "ngrams_supported")}
    return GroundingResult(
        entity_precision=_share(total["entities_supported"], total["entities"]),
        number_precision=_share(total["numbers_supported"], total["numbers"]),
        ngram_precision=_share(total["ngrams_supported"], total["ngrams"]),
        ngram_n=results[0].ngram_n,
        unsupported_entities=tuple(e for r in results for e in r.unsupported_entities),
        unsupported_numbers=tuple(n for r in results for n in r.unsupported_numbers),
        **total,
    )


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None
