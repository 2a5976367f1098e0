"""ROUGE-1/2/L F-measure (rouge-score, Porter stemming), as an evaluate metric that loads offline.

``evaluate.load("rouge")`` needs the hub; ``evaluate.load("evals/metrics/rouge")`` does not.
``compute(predictions=summaries, references=reference_summaries)``. Wraps ``hybrid.evaluation.metrics.summaries``.
"""

import datasets
import evaluate
from hybrid.evaluation.metrics.module_info import text_metric_info
from hybrid.evaluation.metrics.summaries import rouge_scores

_DESCRIPTION = "Mean ROUGE-1, ROUGE-2 and ROUGE-L F-measure between predictions and references."
_KWARGS = """
Args:
    predictions: generated summaries.
    references: one reference summary per prediction.
    use_stemmer: Porter stemming before matching (default True).
Returns:
    rouge1, rouge2, rougeL, pairs.
"""


class Rouge(evaluate.Metric):
    def _info(self):
        return text_metric_info(_DESCRIPTION, _KWARGS, datasets.Value("string"))

    def _compute(self, predictions, references, use_stemmer=True):
        return rouge_scores(predictions, references, use_stemmer=use_stemmer).to_dict()
