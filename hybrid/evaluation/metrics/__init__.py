"""The metrics: factuality (source grounding, closed-book fact probes), coherence (adjacent-sentence similarity),
fluency (perplexity under an independent judge LM), diversity, and reference-based summary scores (ROUGE,
BERTScore). Importing this package does not import torch; models load when a scorer object is created.
"""

from hybrid.evaluation.metrics.diversity import (
    DiversityResult,
    aggregate_diversity,
    repeated_ngram_rate,
    score_diversity,
    unigram_entropy_bits,
)
from hybrid.evaluation.metrics.facts import FactProbe, FactResult, answer_in_continuation, load_fact_probes, score_facts
from hybrid.evaluation.metrics.grounding import (
    GroundingResult,
    aggregate_grounding,
    extract_entities,
    extract_numbers,
    score_grounding,
    score_grounding_batch,
)
from hybrid.evaluation.metrics.judge import DEFAULT_JUDGE, Judge, JudgeConfig
from hybrid.evaluation.metrics.similarity import CoherenceResult, SentenceEncoder, score_coherence
from hybrid.evaluation.metrics.summaries import BertScorer, BertScoreResult, RougeResult, bert_scores, rouge_scores

__all__ = [
    "DEFAULT_JUDGE",
    "BertScoreResult",
    "BertScorer",
    "CoherenceResult",
    "DiversityResult",
    "FactProbe",
    "FactResult",
    "GroundingResult",
    "Judge",
    "JudgeConfig",
    "RougeResult",
    "SentenceEncoder",
    "aggregate_diversity",
    "aggregate_grounding",
    "answer_in_continuation",
    "bert_scores",
    "extract_entities",
    "extract_numbers",
    "load_fact_probes",
    "repeated_ngram_rate",
    "rouge_scores",
    "score_coherence",
    "score_diversity",
    "score_facts",
    "score_grounding",
    "score_grounding_batch",
    "unigram_entropy_bits",
]
