"""Synthetic (claim, source) pairs for the factual-consistency classifier, built from real source sentences.

A claim is one document sentence (``hybrid.consistency.documents``), transformed or not; its source is a window of
1-3 consecutive sentences of the same document that contains the original sentence.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from hybrid.consistency.corruptions import CONSISTENT_TRANSFORMS, CORRUPTIONS
from hybrid.consistency.documents import Document
from hybrid.text.units import split_sentences

UNSUPPORTED = "unsupported"  # a sentence of the same document from outside the source window


@dataclass(frozen=True)
class ClaimPair:
    claim: str
    source: str
    label: int  # 1 consistent, 0 inconsistent
    kind: str  # identity / neighbour / drop_clause / paraphrase, or a corruption name
    origin: str


def source_window(document: Document, index: int, rng: random.Random, size: int | None = None) -> str:
    """1-3 consecutive sentences (``size`` or random) that contain sentence ``index``."""
    n = len(document.sentences)
    size = min(size or rng.randint(1, 3), n)
    first = rng.randint(max(0, index - size + 1), min(index, n - size))
    return " ".join(document.sentences[first : first + size])


def _unsupported_claim(document: Document, index: int, rng: random.Random) -> str | None:
    far = [j for j in range(len(document.sentences)) if abs(j - index) > 3]
    return document.sentences[rng.choice(far)] if far else None


# Corruptions that take their replacement from a pool of sentences: drawing it from the source window itself
# makes a hard negative (the wrong entity or number does occur in the source, just not in that role).
POOLED_CORRUPTIONS = ("entity_swap", "number_swap")


def pairs_for_sentence(document: Document, index: int, rng: random.Random, exhaustive: bool = False,
                       window_size: int | None = None, in_window_share: float = 0.0) -> list[ClaimPair]:
    """Pairs for one sentence. Default: one consistent + one inconsistent pair (random applicable kinds).
    ``exhaustive``: every applicable kind once (used for held-out evaluation). ``in_window_share``: how often
    entity/number swaps take their replacement from the source window rather than the whole document."""
    sentence = document.sentences[index]
    source = source_window(document, index, rng, window_size)
    window_pool = split_sentences(source)
    make = lambda claim, label, kind: ClaimPair(claim, source, label, kind, document.origin)  # noqa: E731

    positives = [make(sentence, 1, "identity")]
    for name, transform in CONSISTENT_TRANSFORMS.items():
        out = transform(sentence, document.sentences, rng)
        if out and out != sentence:
            positives.append(make(out, 1, name))
    negatives = []
    for name, corrupt in CORRUPTIONS.items():
        out = None
        if name in POOLED_CORRUPTIONS and in_window_share and rng.random() < in_window_share:
            out = corrupt(sentence, window_pool, rng)
        out = out or corrupt(sentence, document.sentences, rng)
        if out and out.lower() != sentence.lower():
            negatives.append(make(out, 0, name))
    unsupported = _unsupported_claim(document, index, rng)
    if unsupported and unsupported not in source:
        negatives.append(make(unsupported, 0, UNSUPPORTED))
    if exhaustive:
        return positives + negatives
    chosen = []
    # The identity pair is easy; prefer the transformed positives when there are any.
    transformed = positives[1:]
    chosen.append(rng.choice(transformed) if transformed and rng.random() < 0.7 else positives[0])
    if negatives:  # an unsupported sentence is almost always available: draw it less often
        weights = [0.4 if p.kind == UNSUPPORTED else 1.0 for p in negatives]
        chosen.append(rng.choices(negatives, weights=weights, k=1)[0])
    return chosen


def build_pairs(documents: Sequence[Document], rng: random.Random, max_sentences: int | None = None,
                exhaustive: bool = False, window_size: int | None = None,
                origin_weights: dict[str, int] | None = None, in_window_share: float = 0.0) -> list[ClaimPair]:
    """Pairs from (a sample of) the documents' sentences; ``origin_weights`` repeats sentences of an origin."""
    weights = origin_weights or {}
    slots = [(d, i) for d in documents for i in range(len(d.sentences)) for _ in range(weights.get(d.origin, 1))]
    rng.shuffle(slots)
    if max_sentences is not None:
        slots = slots[:max_sentences]
    pairs = []
    for document, index in slots:
        pairs.extend(pairs_for_sentence(document, index, rng, exhaustive=exhaustive, window_size=window_size,
                                        in_window_share=in_window_share))
    return pairs
