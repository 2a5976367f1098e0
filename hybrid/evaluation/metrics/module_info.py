"""What the `evaluate` metric modules under evals/metrics/ declare about their inputs, written once."""

from __future__ import annotations


def text_metric_info(description: str, inputs_description: str, references=None):
    """`evaluate.MetricInfo` for a metric of generated texts (`predictions`, strings) and, when given, `references` of
    that `datasets` feature (a string, or a sequence of accepted answers)."""
    import datasets
    import evaluate

    features = {"predictions": datasets.Value("string")} | ({"references": references} if references is not None else {})
    return evaluate.MetricInfo(description=description, citation="", inputs_description=inputs_description,
                               features=datasets.Features(features))
