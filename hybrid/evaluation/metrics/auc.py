"""ROC AUC by ranks: one definition for the refiner's error detection and the consistency classifier."""

from __future__ import annotations

from typing import Sequence


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Probability that a random positive (label 1) outranks a random negative (ties count half); nan without both."""
    pairs = sorted(zip(scores, labels))
    positives = sum(labels)
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    rank_sum, index = 0.0, 0
    while index < len(pairs):
        end = index
        while end < len(pairs) and pairs[end][0] == pairs[index][0]:
            end += 1
        average_rank = (index + 1 + end) / 2
        rank_sum += average_rank * sum(label for _, label in pairs[index:end])
        index = end
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
