"""The local evaluate metric scripts load offline with evaluate.load(<folder>) and give the package's numbers."""

from pathlib import Path

import pytest

METRICS = Path(__file__).resolve().parents[1] / "evals" / "metrics"


@pytest.fixture(scope="module")
def evaluate_module():
    return pytest.importorskip("evaluate")


def test_grounding_metric_loads_and_detects_planted_number(evaluate_module):
    metric = evaluate_module.load(str(METRICS / "grounding"))
    source = "The bridge opened in 1937 and its main span is 1,280 metres long."
    clean = metric.compute(predictions=["The bridge opened in 1937."], references=[source])
    planted = metric.compute(predictions=["The bridge opened in 1941."], references=[source])
    assert clean["number_precision"] == 1.0
    assert planted["number_precision"] == 0.0


def test_diversity_metric_loads(evaluate_module):
    metric = evaluate_module.load(str(METRICS / "diversity"))
    varied = metric.compute(predictions=["the cat sat on a mat near the door"])
    looped = metric.compute(predictions=["the cat sat the cat sat the cat sat"])
    assert looped["repeat_rate_2"] > varied["repeat_rate_2"]


def test_facts_metric_loads(evaluate_module):
    metric = evaluate_module.load(str(METRICS / "facts"))
    out = metric.compute(predictions=[" Paris.", " Lyon."], references=[["Paris"], ["Paris"]])
    assert out == {"accuracy": 0.5, "correct": 1, "total": 2}


def test_rouge_metric_loads(evaluate_module):
    metric = evaluate_module.load(str(METRICS / "rouge"))
    out = metric.compute(predictions=["the cat sat on the mat"], references=["the cat sat on the mat"])
    assert out["rouge1"] == pytest.approx(1.0) and out["rougeL"] == pytest.approx(1.0)
