"""Evaluation layer: factuality (source grounding, a trained consistency classifier, closed-book fact probes),
coherence (adjacent-sentence similarity), fluency (perplexity under an independent judge LM), diversity, and
reference-based summary scores (ROUGE, BERTScore). Importing this package does not import torch; models load
when a scorer object is created.
"""

from hybrid.evaluation.consistency import ConsistencyClassifier, ConsistencyResult
from hybrid.evaluation.consistency_eval import ConsistencyEvaluation, evaluate_predictions, held_out_pairs
from hybrid.evaluation.diversity import (
    DiversityResult,
    aggregate_diversity,
    repeated_ngram_rate,
    score_diversity,
    unigram_entropy_bits,
)
from hybrid.evaluation.facts import FactProbe, FactResult, answer_in_continuation, load_fact_probes, score_facts
from hybrid.evaluation.grounding import (
    GroundingResult,
    aggregate_grounding,
    extract_entities,
    extract_numbers,
    score_grounding,
    score_grounding_batch,
)
from hybrid.evaluation.judge import DEFAULT_JUDGE, Judge, JudgeConfig
from hybrid.evaluation.similarity import CoherenceResult, SentenceEncoder, score_coherence
from hybrid.evaluation.summaries import BertScorer, BertScoreResult, RougeResult, bert_scores, rouge_scores
from hybrid.text.units import split_sentences
from hybrid.evaluation.validate import (
    ClassifierValidation,
    GroundingValidation,
    JudgeValidation,
    validate_classifier,
    validate_grounding,
    validate_judge,
)

__all__ = [
    "DEFAULT_JUDGE",
    "BertScoreResult",
    "BertScorer",
    "ClassifierValidation",
    "CoherenceResult",
    "ConsistencyClassifier",
    "ConsistencyEvaluation",
    "ConsistencyResult",
    "DiversityResult",
    "FactProbe",
    "FactResult",
    "GroundingResult",
    "GroundingValidation",
    "Judge",
    "JudgeConfig",
    "JudgeValidation",
    "RougeResult",
    "SentenceEncoder",
    "aggregate_diversity",
    "aggregate_grounding",
    "answer_in_continuation",
    "bert_scores",
    "evaluate_predictions",
    "extract_entities",
    "extract_numbers",
    "held_out_pairs",
    "load_fact_probes",
    "repeated_ngram_rate",
    "rouge_scores",
    "score_coherence",
    "score_diversity",
    "score_facts",
    "score_grounding",
    "score_grounding_batch",
    "split_sentences",
    "unigram_entropy_bits",
    "validate_classifier",
    "validate_grounding",
    "validate_judge",
]
