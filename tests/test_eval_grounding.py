"""Source-grounding factuality: entity, number and n-gram precision against the source."""

import pytest

from hybrid.errors import HybridError
from hybrid.evaluation.metrics.grounding import (
    aggregate_grounding,
    extract_entities,
    extract_numbers,
    normalise_number,
    score_grounding,
    score_grounding_batch,
)

SOURCE = (
    "In 1969, NASA landed Apollo 11 on the Moon. The programme employed about 400,000 people "
    "and three astronauts flew on the mission. Neil Armstrong stepped out first, and accuracy rose by 20 %."
)


def test_copied_sentence_is_fully_supported():
    result = score_grounding("NASA landed Apollo 11 on the Moon in 1969.", SOURCE)
    assert result.entity_precision == 1.0
    assert result.number_precision == 1.0
    assert result.ngrams > 0 and result.ngram_precision > 0.5


def test_planted_number_lowers_number_precision():
    clean = score_grounding("The programme employed about 400,000 people.", SOURCE)
    planted = score_grounding("The programme employed about 400,000 people in 1972.", SOURCE)
    assert clean.number_precision == 1.0
    assert planted.number_precision == 0.5
    assert planted.unsupported_numbers == ("1972",)


def test_unsupported_entity_lowers_entity_precision():
    clean = score_grounding("The landing by NASA was watched worldwide.", SOURCE)
    planted = score_grounding("The landing by NASA and the European Space Agency was watched worldwide.", SOURCE)
    assert clean.entity_precision == 1.0
    assert planted.entity_precision < 1.0
    assert "European Space Agency" in planted.unsupported_entities


def test_number_normalisation():
    assert normalise_number("1,000") == normalise_number("1000") == "1000"
    assert normalise_number("2.50") == "2.5"
    assert normalise_number(".5") == "0.5"
    result = score_grounding("It employed 400000 people and accuracy rose by 20 percent; 3 astronauts flew.", SOURCE)
    assert result.number_precision == 1.0  # "400,000", "20 %" and "three" in the source


def test_number_extraction_kinds():
    numbers = extract_numbers("We used 1,000 samples, 0.5 dropout, 95% accuracy, in 2020, and 12 percent more.")
    assert numbers == ["1,000", "0.5", "95%", "2020", "12 percent"]


def test_list_enumerators_are_not_numbers():
    text = "The outcome:\n\n1. Beam search won.\n 2) It took 7 hours.\n3. Done in 2019.\nScores rose 4. Then 5 fell."
    assert extract_numbers(text) == ["7", "2019", "4", "5"]  # "1." "2)" "3." open lines; "4." ends a sentence
    assert score_grounding("Steps:\n1. Train.\n2. Test.", SOURCE).number_precision is None  # no number claimed


def test_entities_skip_sentence_start_but_keep_acronyms():
    entities = extract_entities("The team met Barack Obama in New York City. However, BERT beats GloVe.")
    assert "Barack Obama" in entities and "New York City" in entities
    assert "BERT" in entities and "GloVe" in entities
    assert "The" not in entities and "However" not in entities


def test_novel_ngrams_raise_novelty():
    copied = score_grounding("three astronauts flew on the mission", SOURCE)
    novel = score_grounding("purple elephants sang loudly under bridges", SOURCE)
    assert copied.ngram_precision == 1.0 and copied.novel_ngram_rate == 0.0
    assert novel.ngram_precision == 0.0 and novel.novel_ngram_rate == 1.0


def test_empty_categories_are_none():
    result = score_grounding("it went well", SOURCE)
    assert result.entity_precision is None and result.entities == 0
    assert result.number_precision is None and result.numbers == 0
    assert score_grounding("", SOURCE).ngram_precision is None


def test_aggregate_is_micro_average():
    results = score_grounding_batch(["NASA flew in 1969.", "NASA flew in 1970 and 1971."], [SOURCE, SOURCE])
    pooled = aggregate_grounding(results)
    assert pooled.numbers == 3 and pooled.numbers_supported == 1
    assert pooled.number_precision == pytest.approx(1 / 3)


def test_mismatched_lengths_raise():
    with pytest.raises(HybridError):
        score_grounding_batch(["a"], [])


def test_a_sources_list_enumerators_support_no_number():
    """The source side reads numbers as the text side does: a source's "2." opening a line numbers its list and
    supports no "2" in the output, and grounded repair never offers it as a copy."""
    from hybrid.refining.grounded_repair import source_claims
    from hybrid.text.claims import number_values

    source = "Findings:\n1. Costs rose 14%.\n2. The 2019 audit found 7 faults."
    assert number_values(source) == {"14", "2019", "7"}
    assert source_claims(source, "number") == ["14", "2019", "7"]
