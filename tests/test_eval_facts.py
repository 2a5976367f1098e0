"""Fact probes: the suite file and the answer matcher."""

import pytest

from hybrid.errors import HybridError
from hybrid.evaluation.metrics.facts import answer_in_continuation, load_fact_probes, score_facts


def test_suite_is_large_and_well_formed():
    probes = load_fact_probes()
    assert len(probes) >= 120
    assert len({p.id for p in probes}) == len(probes)
    assert {p.category for p in probes} >= {"geography", "science", "history", "arithmetic", "units"}
    for probe in probes:
        assert probe.prompt.strip() and probe.answers
        assert not probe.prompt.endswith(" "), probe.id  # the continuation brings its own leading space


def test_answer_matching():
    assert answer_in_continuation(" Paris, the city of light.", ["Paris"])
    assert answer_in_continuation(" PARIS", ["Paris"])
    assert not answer_in_continuation(" a Parisian city", ["Paris"])
    assert answer_in_continuation(" New Delhi.", ["New Delhi", "Delhi"])
    assert answer_in_continuation(" 1,000 metres", ["1000"])
    assert answer_in_continuation(" Brasilia.", ["Brasília"])
    assert not answer_in_continuation(" one two three four five six seven eight nine ten Paris", ["Paris"])
    assert answer_in_continuation(" one two three four five six seven eight nine ten Paris", ["Paris"], window=11)


def test_a_restated_prompt_does_not_push_the_answer_out_of_the_window():
    prompt = "Complete the sentence with the correct fact: The Statue of Liberty stands in the city"
    text = "The Statue of Liberty stands in the city of New York."
    assert not answer_in_continuation(text, ["New York"])  # 11 words: the answer starts at word 10
    assert answer_in_continuation(text, ["New York"], prompt=prompt)
    assert answer_in_continuation("The answer is: Seven times eight equals 56.", ["56"], prompt="Seven times eight equals")
    assert not answer_in_continuation("The answer is: Seven times eight equals 48.", ["56"], prompt="Seven times eight equals")
    # without a restatement the window starts at the first word, as before
    assert answer_in_continuation(" Paris.", ["Paris"], prompt="The capital of France is")
    far = "one two three four five six seven eight nine ten eleven twelve France is Paris"
    assert not answer_in_continuation(far, ["Paris"], prompt="The capital of France is")  # repeated too late to count


def test_scoring_per_category(tmp_path):
    path = tmp_path / "facts.yaml"
    path.write_text(
        "facts:\n"
        "- {id: a, category: geo, prompt: The capital of France is, answers: [Paris]}\n"
        "- {id: b, category: geo, prompt: The capital of Italy is, answers: [Rome]}\n"
        "- {id: c, category: math, prompt: Two plus two equals, answers: ['4', four]}\n"
    )
    probes = load_fact_probes(path)
    result = score_facts([" Paris.", " Milan.", " four."], probes)
    assert result.correct == 2 and result.total == 3
    assert result.per_category == {"geo": 0.5, "math": 1.0}
    assert result.wrong_ids == ("b",)


def test_bad_files_raise(tmp_path):
    with pytest.raises(HybridError):
        load_fact_probes(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("facts:\n- {id: a, prompt: The capital of France is}\n")
    with pytest.raises(HybridError):
        load_fact_probes(bad)
    with pytest.raises(HybridError):
        score_facts([" Paris"], [])
