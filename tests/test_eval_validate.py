"""Validation helpers: planted unsupported facts must lower grounding precision (fast)."""

from hybrid.evaluation.harness.validate import held_out_passages, shuffle_words, validate_grounding


def test_held_out_passages_exist():
    passages = held_out_passages()
    assert len(passages) >= 8 and all(len(p.split()) > 30 for p in passages)


def test_planted_facts_lower_grounding_precision():
    result = validate_grounding()
    assert result.clean_number_precision == 1.0 and result.clean_entity_precision == 1.0
    assert result.planted_number_precision < 0.6 and result.number_drop_share == 1.0
    assert result.planted_entity_precision < 0.8 and result.entity_drop_share == 1.0


def test_shuffle_keeps_the_words():
    import random

    text = "one two three four five six"
    shuffled = shuffle_words(text, random.Random(1))
    assert sorted(shuffled.split()) == sorted(text.split()) and shuffled != text


class _WordOverlapClassifier:
    """Stand-in: P(consistent) = share of the claim's words found in the source."""

    threshold = 0.8

    def score(self, claims, sources):
        return [sum(w in s.split() for w in c.split()) / len(c.split()) for c, s in zip(claims, sources)]


def _write_set(folder, name, rows):
    import json

    (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_hallucination_validation_counts_each_class(tmp_path):
    from hybrid.evaluation.harness.validate import validate_classifier_on_hallucinations

    source = "the cat sat on the mat"
    _write_set(tmp_path, "a", [
        {"source": source, "claim": "the cat sat", "consistent": 1},  # caught as supported
        {"source": source, "claim": "the dog barked loudly", "consistent": 0},  # caught
        {"source": source, "claim": "the cat ran", "consistent": 1},  # wrongly flagged (overlap 2/3)
    ])
    _write_set(tmp_path, "b", [{"source": source, "claim": "on the mat", "consistent": 0}])  # missed
    result = validate_classifier_on_hallucinations(_WordOverlapClassifier(), tmp_path)
    assert result.pairs == 4 and result.hallucinations == 2 and result.sets == {"a": 3, "b": 1}
    assert result.supported_accuracy == 0.5 and result.hallucination_recall == 0.5 and result.balanced_accuracy == 0.5
    assert result.per_set_balanced_accuracy["a"] == 0.75  # b has no supported sentence: nan
    assert result.roc_auc == 0.625  # supported 1.0, 0.667 vs hallucinated 0.25, 1.0: two wins, one tie, one loss


def test_hallucination_rows_need_labels(tmp_path):
    import pytest

    from hybrid.evaluation.harness.validate import load_labelled_sentences

    _write_set(tmp_path, "bad", [{"source": "s", "claim": "c", "consistent": "yes"}])
    with pytest.raises(ValueError, match="consistent"):
        load_labelled_sentences(tmp_path)


def test_shipped_hallucination_sets_are_labelled():
    from hybrid.evaluation.harness.validate import load_labelled_sentences

    sets = load_labelled_sentences()
    rows = [r for rows in sets.values() for r in rows]
    assert len(rows) >= 40 and 0 < sum(r["consistent"] == 0 for r in rows) < len(rows)
    assert all(r["note"] for r in rows)  # every label says why
