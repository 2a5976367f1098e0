"""Lexical diversity (unigram entropy in bits, repeated 2/3/4-gram rates) of generated texts, as an evaluate metric.

Load offline with ``evaluate.load("evals/metrics/diversity")``; ``compute(predictions=texts)``.
Wraps ``hybrid.evaluation.metrics.diversity`` (figures are means over texts).
"""

import evaluate
from hybrid.evaluation.metrics.module_info import text_metric_info
from hybrid.evaluation.metrics.diversity import aggregate_diversity
from hybrid.evaluation.metrics.diversity import score_diversity

_DESCRIPTION = "Unigram entropy and the share of repeated n-grams (n=2,3,4) within each generated text."
_KWARGS = """
Args:
    predictions: generated texts.
Returns:
    unigram_entropy_bits, repeat_rate_2, repeat_rate_3, repeat_rate_4 (means over texts) and tokens (total).
"""


class Diversity(evaluate.Metric):
    def _info(self):
        return text_metric_info(_DESCRIPTION, _KWARGS)

    def _compute(self, predictions):
        return aggregate_diversity(score_diversity(text) for text in predictions).to_dict()
