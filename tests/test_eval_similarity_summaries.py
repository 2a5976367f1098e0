"""ROUGE (fast); BERTScore and adjacent-sentence coherence on the local MiniLM encoder (slow)."""

import pytest

from hybrid.errors import HybridError
from hybrid.evaluation.metrics.summaries import rouge_scores


def test_rouge_rewards_overlap():
    reference = "the proposed parser improves accuracy on three languages"
    close = rouge_scores(["the proposed parser improves accuracy on two languages"], [reference])
    far = rouge_scores(["bananas are yellow and grow in warm countries"], [reference])
    assert close.rouge1 > 0.7 and close.rouge2 > 0.5 and close.rougeL > 0.7
    assert far.rouge1 < 0.2 and far.rouge2 == 0.0
    with pytest.raises(HybridError):
        rouge_scores(["a"], ["b", "c"])


@pytest.mark.slow
def test_bertscore_and_coherence_with_minilm():
    from hybrid.evaluation.metrics.similarity import SentenceEncoder, score_coherence
    from hybrid.evaluation.metrics.summaries import BertScorer

    scorer = BertScorer()
    reference = "The cat sat on the mat."
    result = scorer.score(["A cat was sitting on the mat.", "Interest rates rose sharply in March."],
                          [reference, reference])
    assert result.per_pair_f1[0] > result.per_pair_f1[1] + 0.2

    encoder = SentenceEncoder()
    coherent = "The cat sat on the mat. The cat then fell asleep on the mat. Later the cat woke up and ate."
    jumbled = "The cat sat on the mat. Interest rates rose by two percent. Volcanoes erupt molten lava."
    result = score_coherence([coherent, jumbled, "Only one sentence."], encoder)
    assert result.per_text[0] > result.per_text[1] + 0.2
    assert result.per_text[2] is None and result.sentence_pairs == 4
