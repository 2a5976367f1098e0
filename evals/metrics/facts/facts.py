"""Closed-book fact accuracy: does each continuation contain an accepted answer in its first words?

Load offline with ``evaluate.load("evals/metrics/facts")``;
``compute(predictions=continuations, references=[[accepted answers], ...])``. Wraps ``hybrid.evaluation.metrics.facts``.
"""

import datasets
import evaluate
from hybrid.evaluation.metrics.module_info import text_metric_info
from hybrid.evaluation.metrics.facts import DEFAULT_WINDOW
from hybrid.evaluation.metrics.facts import answer_in_continuation

_DESCRIPTION = "Share of continuations in which an accepted answer appears (whole words, any case) in the first words."
_KWARGS = """
Args:
    predictions: model continuations of the fact prompts.
    references: for each continuation, the list of accepted answers.
    window: how many leading words of a continuation are searched (default 10).
Returns:
    accuracy, correct, total.
"""


class Facts(evaluate.Metric):
    def _info(self):
        return text_metric_info(_DESCRIPTION, _KWARGS, datasets.Sequence(datasets.Value("string")))

    def _compute(self, predictions, references, window=DEFAULT_WINDOW):
        correct = sum(answer_in_continuation(p, r, window) for p, r in zip(predictions, references))
        total = len(predictions)
        return {"accuracy": correct / total if total else None, "correct": correct, "total": total}
