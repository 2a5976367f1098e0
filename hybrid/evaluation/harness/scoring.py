"""Score every sample of a suite with the metrics that fit its task; scores land in `sample.scores`."""

from __future__ import annotations

import logging

from tqdm.auto import tqdm

from hybrid.evaluation.metrics.diversity import score_diversity
from hybrid.evaluation.metrics.facts import answer_in_continuation
from hybrid.evaluation.metrics.grounding import score_grounding
from hybrid.evaluation.harness.runner import EvalConfig, Sample
from hybrid.evaluation.harness.suite import Example, Suite

log = logging.getLogger(__name__)

# Direction of each metric, for the report: +1 higher is better, -1 lower is better, 0 descriptive.
METRIC_DIRECTION = {
    "fact_accuracy": 1, "entity_precision": 1, "number_precision": 1, "novel_ngram_rate": -1, "consistency": 1,
    "rouge1": 1, "rouge2": 1, "rougeL": 1, "bertscore_f1": 1,
    "judge_perplexity": -1, "unigram_entropy": 1, "repeat_rate_3": -1, "adjacent_similarity": 1,
    "total_s": -1, "cost_vs_draft": -1, "words": 0,
}


def _cheap_scores(sample: Sample, example: Example, suite: Suite) -> dict:
    scores = {"words": len(sample.text.split())}
    diversity = score_diversity(sample.text)
    scores["unigram_entropy"] = diversity.unigram_entropy_bits
    scores["repeat_rate_3"] = diversity.repeat_rate_3
    if suite.task == "facts" and example.answers:
        scores["fact_accuracy"] = float(answer_in_continuation(sample.text, example.answers, prompt=example.prompt))
    if suite.task == "summarize" and example.source:
        grounding = score_grounding(sample.text, example.source)
        scores["entity_precision"] = grounding.entity_precision
        scores["number_precision"] = grounding.number_precision
        scores["novel_ngram_rate"] = grounding.novel_ngram_rate
    return scores


def score_samples(samples: list[Sample], examples: list[Example], suite: Suite, config: EvalConfig) -> None:
    by_id = {e.id: e for e in examples}
    for sample in samples:
        sample.scores.update(_cheap_scores(sample, by_id[sample.example_id], suite))
    with_reference = [s for s in samples if by_id[s.example_id].reference]
    if with_reference and suite.task != "facts":
        from hybrid.evaluation.metrics.summaries import rouge_scores

        for sample in with_reference:
            rouge = rouge_scores([sample.text], [by_id[sample.example_id].reference])
            sample.scores.update(rouge1=rouge.rouge1, rouge2=rouge.rouge2, rougeL=rouge.rougeL)
    if config.encoders and suite.task != "facts":
        _encoder_scores(samples, by_id, suite, with_reference)
    if config.judge and suite.task != "facts":
        _judge_scores(samples)


def _encoder_scores(samples, by_id, suite, with_reference) -> None:
    from hybrid.evaluation.metrics.similarity import SentenceEncoder, adjacent_similarities

    encoder = SentenceEncoder()
    for sample in tqdm(samples, desc="coherence", unit="sample"):
        sims = adjacent_similarities(sample.text, encoder)
        sample.scores["adjacent_similarity"] = sum(sims) / len(sims) if sims else None
    if with_reference:
        from hybrid.evaluation.metrics.summaries import BertScorer

        scorer = BertScorer()
        result = scorer.score([s.text for s in with_reference], [by_id[s.example_id].reference for s in with_reference])
        for sample, f1 in zip(with_reference, result.per_pair_f1):
            sample.scores["bertscore_f1"] = f1
    if suite.task == "summarize":
        from hybrid.consistency.classifier import ConsistencyClassifier

        classifier = ConsistencyClassifier()
        for sample in tqdm(samples, desc="consistency", unit="sample"):
            sample.scores["consistency"] = classifier.score_text(sample.text, by_id[sample.example_id].source).mean


def _judge_scores(samples) -> None:
    from hybrid.evaluation.metrics.judge import Judge

    judge = Judge()
    texts = [s.text if s.text.strip() else "." for s in samples]
    perplexities = []
    for start in tqdm(range(0, len(texts), 8), desc="judge perplexity", unit="batch"):
        perplexities += judge.perplexity(texts[start : start + 8])
    for sample, value in zip(samples, perplexities):
        sample.scores["judge_perplexity"] = value if sample.text.strip() else None
