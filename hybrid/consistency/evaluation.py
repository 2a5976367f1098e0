"""Held-out evaluation of the consistency classifier on synthetic corruptions, per corruption type.

For each corruption type, balanced accuracy = (accuracy on the consistent pairs + accuracy on that type's
inconsistent pairs) / 2, so every type is judged against the same consistent pairs. The pairs come from
documents never used in training (ACLSum validation papers and the held-out plain-English passages).
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

from hybrid.evaluation.metrics.auc import roc_auc
from hybrid.consistency.documents import held_out_documents
from hybrid.consistency.pairs import ClaimPair, build_pairs
from hybrid.results import Result
from hybrid.text.units import word_tokens


@dataclass(frozen=True)
class KindFigures:
    accuracy: float  # share of this kind's pairs classified correctly
    balanced_accuracy: float | None  # for a corruption: with the consistent pairs; None for consistent kinds
    pairs: int


@dataclass(frozen=True)
class ConsistencyEvaluation(Result):
    balanced_accuracy: float  # (accuracy on consistent + mean accuracy over corruption types) / 2
    consistent_accuracy: float
    inconsistent_accuracy: float  # macro mean over corruption types
    roc_auc: float
    per_kind: dict[str, KindFigures]
    per_origin_balanced_accuracy: dict[str, float]
    # Inconsistent pairs whose claim has no word missing from the source (the swapped-in entity/number occurs in
    # the source too): detection here cannot rest on lexical novelty.
    no_novel_word_accuracy: dict[str, KindFigures]
    pairs: int
    threshold: float


def held_out_pairs(seed: int = 1234, per_kind: int = 250, window_size: int = 3) -> list[ClaimPair]:
    """Every applicable transformation of held-out sentences, at most ``per_kind`` pairs of each kind."""
    rng = random.Random(seed)
    pairs = build_pairs(held_out_documents(), rng, exhaustive=True, window_size=window_size)
    by_kind: dict[str, list[ClaimPair]] = defaultdict(list)
    for pair in pairs:
        by_kind[pair.kind].append(pair)
    out: list[ClaimPair] = []
    for kind in sorted(by_kind):
        # Plain-English pairs first: they are few, and the main source of pronoun swaps.
        plain = [p for p in by_kind[kind] if p.origin == "plain"]
        rest = [p for p in by_kind[kind] if p.origin != "plain"]
        rng.shuffle(rest)
        out.extend((plain + rest)[:per_kind])
    return out


def evaluate_predictions(probabilities: Sequence[float], pairs: Sequence[ClaimPair], threshold: float = 0.5) -> ConsistencyEvaluation:
    """Figures for predicted P(consistent) against the pairs' labels."""
    correct_by_kind: dict[str, list[bool]] = defaultdict(list)
    hidden_by_kind: dict[str, list[bool]] = defaultdict(list)
    correct_by_origin: dict[tuple[str, int], list[bool]] = defaultdict(list)
    for p, pair in zip(probabilities, pairs):
        ok = (p >= threshold) == (pair.label == 1)
        correct_by_kind[pair.kind].append(ok)
        correct_by_origin[(pair.origin, pair.label)].append(ok)
        if pair.label == 0 and not set(word_tokens(pair.claim)) - set(word_tokens(pair.source)):
            hidden_by_kind[pair.kind].append(ok)
    consistent = [p >= threshold for pair, p in zip(pairs, probabilities) if pair.label == 1]
    consistent_acc = sum(consistent) / len(consistent) if consistent else float("nan")
    labels = {pair.kind: pair.label for pair in pairs}
    per_kind = {}
    corruption_accs = []
    for kind, oks in sorted(correct_by_kind.items()):
        acc = sum(oks) / len(oks)
        if labels[kind] == 0:
            corruption_accs.append(acc)
            per_kind[kind] = KindFigures(acc, (acc + consistent_acc) / 2, len(oks))
        else:
            per_kind[kind] = KindFigures(acc, None, len(oks))
    inconsistent_acc = sum(corruption_accs) / len(corruption_accs) if corruption_accs else float("nan")
    per_origin = {}
    for origin in sorted({o for o, _ in correct_by_origin}):
        pos, neg = correct_by_origin.get((origin, 1), []), correct_by_origin.get((origin, 0), [])
        if pos and neg:
            per_origin[origin] = (sum(pos) / len(pos) + sum(neg) / len(neg)) / 2
    return ConsistencyEvaluation(
        balanced_accuracy=(consistent_acc + inconsistent_acc) / 2,
        consistent_accuracy=consistent_acc,
        inconsistent_accuracy=inconsistent_acc,
        roc_auc=roc_auc(list(probabilities), [p.label for p in pairs]),
        per_kind=per_kind,
        per_origin_balanced_accuracy=per_origin,
        no_novel_word_accuracy={
            kind: KindFigures(sum(oks) / len(oks), (sum(oks) / len(oks) + consistent_acc) / 2, len(oks))
            for kind, oks in sorted(hidden_by_kind.items())
        },
        pairs=len(pairs),
        threshold=threshold,
    )
