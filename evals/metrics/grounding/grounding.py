"""Source-grounding precision (entities, numbers, n-grams) of outputs against their sources, as an evaluate metric.

Load offline with ``evaluate.load("evals/metrics/grounding")``; ``compute(predictions=outputs, references=sources)``.
Wraps ``hybrid.evaluation.metrics.grounding`` (counts are pooled over all pairs before dividing).
"""

import datasets
import evaluate
from hybrid.evaluation.metrics.module_info import text_metric_info
from hybrid.evaluation.metrics.grounding import aggregate_grounding
from hybrid.evaluation.metrics.grounding import score_grounding_batch

_DESCRIPTION = "Share of an output's entities, numbers and word n-grams that its source text supports."
_KWARGS = """
Args:
    predictions: generated texts.
    references: the source text of each generated text.
    ngram_n: n-gram order for the n-gram precision (default 3).
Returns:
    entity_precision, number_precision, ngram_precision (None when no item of that kind), novel_ngram_rate, counts.
"""


class Grounding(evaluate.Metric):
    def _info(self):
        return text_metric_info(_DESCRIPTION, _KWARGS, datasets.Value("string"))

    def _compute(self, predictions, references, ngram_n=3):
        pooled = aggregate_grounding(score_grounding_batch(predictions, references, ngram_n))
        out = pooled.to_dict()
        out.pop("unsupported_entities")
        out.pop("unsupported_numbers")
        return out
