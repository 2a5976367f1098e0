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

from dataclasses import dataclass, field
from typing import Iterable, Sequence

from hybrid.errors import HybridError
from hybrid.results import Result
from hybrid.text.claims import NUMBER, entity_supported, extract_entities, extract_numbers, normalise_number, number_values
from hybrid.text.units import ngrams, word_tokens

__all__ = ["GroundingResult", "aggregate_grounding", "extract_entities", "extract_numbers", "normalise_number", "number_values",
           "score_grounding", "score_grounding_batch"]


@dataclass(frozen=True)
class GroundingResult(Result):
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
        return super().to_dict() | {"novel_ngram_rate": self.novel_ngram_rate}


def score_grounding(output: str, source: str, ngram_n: int = 3) -> GroundingResult:
    """Grounding of one output in one source text."""
    if ngram_n < 1:
        raise HybridError(f"ngram_n must be at least 1, got {ngram_n}")
    source_words = set(word_tokens(source))

    entities = extract_entities(output)
    bad_entities = tuple(e for e in entities if not entity_supported(e, source_words))

    numbers = extract_numbers(output)
    source_values = number_values(source, include_words=True)
    bad_numbers = tuple(n for n in numbers if normalise_number(NUMBER.match(n).group(1)) not in source_values)

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
