"""Validation helpers: planted unsupported facts must lower grounding precision (fast)."""

from hybrid.evaluation.validate import held_out_passages, shuffle_words, validate_grounding


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
