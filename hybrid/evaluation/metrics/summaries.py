"""Reference-based summary scores: ROUGE-1/2/L (``rouge-score``) and BERTScore (``bert-score`` on local MiniLM).

Both work offline. BERTScore uses all six MiniLM layers (``num_layers=6``) and no baseline rescaling
(baseline files are not shipped for this encoder), so its absolute values are only comparable with each other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

from hybrid.errors import HybridError
from hybrid.evaluation.metrics.minilm import minilm_folder
from hybrid.results import Result

logger = logging.getLogger(__name__)

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


@dataclass(frozen=True)
class RougeResult(Result):
    """Mean F-measures over prediction/reference pairs."""

    rouge1: float
    rouge2: float
    rougeL: float
    pairs: int


@dataclass(frozen=True)
class BertScoreResult(Result):
    """Mean BERTScore precision, recall and F1 over pairs, and the per-pair F1."""

    precision: float
    recall: float
    f1: float
    per_pair_f1: tuple[float, ...]


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise HybridError(f"got {len(predictions)} predictions but {len(references)} references: pass one each")
    if not predictions:
        raise HybridError("no predictions to score")


def rouge_scores(predictions: Sequence[str], references: Sequence[str], use_stemmer: bool = True) -> RougeResult:
    """Mean ROUGE-1/2/L F-measure (Porter stemming on by default)."""
    from rouge_score import rouge_scorer

    _check_pairs(predictions, references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, reference in zip(predictions, references):
        scores = scorer.score(reference, prediction)  # rouge-score takes (target, prediction)
        for key in ROUGE_TYPES:
            totals[key] += scores[key].fmeasure
    n = len(predictions)
    return RougeResult(rouge1=totals["rouge1"] / n, rouge2=totals["rouge2"] / n, rougeL=totals["rougeL"] / n, pairs=n)


class BertScorer:
    """BERTScore with the local MiniLM encoder; load once, score many batches."""

    def __init__(self, device: str = "cpu", batch_size: int = 32, idf: bool = False) -> None:
        from bert_score import BERTScorer

        self.batch_size = batch_size
        self._scorer = BERTScorer(
            model_type=str(minilm_folder()), num_layers=6, device=device, batch_size=batch_size, idf=idf,
            use_fast_tokenizer=True,
        )

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> BertScoreResult:
        _check_pairs(predictions, references)
        precision, recall, f1 = self._scorer.score(list(predictions), list(references), batch_size=self.batch_size)
        return BertScoreResult(
            precision=float(precision.mean()),
            recall=float(recall.mean()),
            f1=float(f1.mean()),
            per_pair_f1=tuple(float(x) for x in f1),
        )


def bert_scores(predictions: Sequence[str], references: Sequence[str], device: str = "cpu") -> BertScoreResult:
    """One-off BERTScore (loads MiniLM each call; keep a ``BertScorer`` for repeated use)."""
    return BertScorer(device=device).score(predictions, references)
