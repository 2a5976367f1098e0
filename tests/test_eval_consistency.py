"""Consistency classifier: synthetic corruptions, pair building, held-out figures, checkpoint and scoring."""

import json
import random
import re
from pathlib import Path

import pytest

from hybrid.consistency.classifier import DEFAULT_CHECKPOINT, source_windows
from hybrid.consistency.corruptions import (
    CORRUPTIONS,
    date_swap,
    drop_clause,
    entity_swap,
    negation,
    number_swap,
    paraphrase,
    pronoun_swap,
)
from hybrid.consistency.documents import held_out_documents, load_plain_passages, training_documents
from hybrid.consistency.pairs import build_pairs
from hybrid.data.aclsum import detokenize
from hybrid.consistency.evaluation import evaluate_predictions, held_out_pairs

DOC = [
    "Marie Curie was born in Warsaw in 1867.",
    "She moved to Paris in 1891 to study physics at the Sorbonne.",
    "The tower is about 330 metres tall, and it was the tallest structure in the world.",
    "In this paper, we propose a method that improves accuracy by 20% on 1,500 examples.",
    "The model does not use labels, which is why it is cheap.",
]


def rng():
    return random.Random(0)


def test_corruptions_change_what_they_claim_to():
    assert re.search(r"\b18\d\d\b", date_swap(DOC[0], DOC, rng())) and date_swap(DOC[0], DOC, rng()) != DOC[0]
    swapped = number_swap(DOC[2], DOC, rng())
    assert swapped != DOC[2] and "330" not in swapped
    assert pronoun_swap(DOC[1], DOC, rng()).startswith("He moved")
    assert negation("The model does not use labels.", DOC, rng()) == "The model does use labels."
    assert negation("The model doesn't use labels.", DOC, rng()) == "The model does use labels."
    assert " not " in negation(DOC[2], DOC, rng())
    entity = entity_swap(DOC[1], DOC, rng())
    assert entity != DOC[1] and ("Paris" not in entity or "Sorbonne" not in entity)
    for name, corrupt in CORRUPTIONS.items():
        assert corrupt("a plain lowercase sentence with nothing to change", [], rng()) is None, name


def test_consistent_transforms_keep_the_facts():
    dropped = drop_clause(DOC[4], DOC, rng())
    assert dropped == "The model does not use labels."
    para = paraphrase(DOC[3], DOC, random.Random(3))
    assert para and para != DOC[3]
    for number in ("20", "1500"):
        assert number in para.replace(",", "")


def test_detokenize_aclsum_text():
    assert detokenize("results , ( QA ) rose by 20 % .") == "results, (QA) rose by 20%."
    # The lighter rendering the refiners were trained on leaves a possessive quote mark where it was.
    assert detokenize("the speakers ' problems , ( QA )", thorough=False) == "the speakers ' problems, (QA)"
    assert detokenize("the speakers ' problems , ( QA )") == "the speakers' problems, (QA)"


def test_pairs_are_balanced_and_held_out_is_disjoint():
    train_docs = training_documents()
    held_docs = held_out_documents()
    assert not {d.doc_id for d in train_docs} & {d.doc_id for d in held_docs}
    assert load_plain_passages(held_out=True) and load_plain_passages(held_out=False)
    pairs = build_pairs(train_docs, random.Random(0), max_sentences=300)
    labels = [p.label for p in pairs]
    assert 0.4 < sum(labels) / len(labels) < 0.6
    for pair in pairs:
        assert pair.claim.strip() and pair.source.strip()
        if pair.label == 0 and pair.kind != "unsupported":
            assert pair.claim not in pair.source  # a corruption differs from the source sentence


def test_held_out_pairs_cover_every_corruption():
    pairs = held_out_pairs(per_kind=20)
    kinds = {p.kind for p in pairs}
    assert set(CORRUPTIONS) <= kinds and "identity" in kinds


def test_evaluation_figures():
    pairs = held_out_pairs(per_kind=10)
    perfect = evaluate_predictions([float(p.label) for p in pairs], pairs)
    assert perfect.balanced_accuracy == 1.0 and perfect.roc_auc == 1.0
    constant = evaluate_predictions([0.9] * len(pairs), pairs)
    assert constant.balanced_accuracy == 0.5
    assert constant.per_kind["entity_swap"].balanced_accuracy == 0.5


def test_source_windows_pick_the_overlapping_part():
    source = " ".join(f"Sentence number {i} talks about topic{i}." for i in range(10))
    windows = source_windows("It talks about topic7 here.", source, window_sentences=3, keep=1)
    assert len(windows) == 1 and "topic7" in windows[0]
    assert source_windows("x", "Short source.", 3, 2) == ["Short source."]


def test_checkpoint_is_small_and_reports_held_out_figures():
    files = {p.name: p.stat().st_size for p in Path(DEFAULT_CHECKPOINT).iterdir()}
    assert {"model.safetensors", "config.json", "metrics.json"} <= set(files)
    assert sum(files.values()) < 50 * 1024 * 1024
    metrics = json.loads((Path(DEFAULT_CHECKPOINT) / "metrics.json").read_text())
    per_kind = metrics["held_out"]["per_kind"]
    for corruption in CORRUPTIONS:
        assert per_kind[corruption]["balanced_accuracy"] is not None
    assert 0.5 < metrics["held_out"]["balanced_accuracy"] <= 1.0


@pytest.mark.slow
def test_classifier_separates_held_out_corruptions():
    from hybrid.consistency.classifier import ConsistencyClassifier
    from hybrid.evaluation.harness.validate import validate_classifier

    classifier = ConsistencyClassifier()
    result = validate_classifier(classifier, per_kind=15)
    assert result.balanced_accuracy > 0.6 and result.roc_auc > 0.65
    source = "The Golden Gate Bridge opened in San Francisco in May 1937. Its main span is 1,280 metres long."
    good, bad = classifier.score(
        ["Its main span is 1,280 metres long.", "Its main span is not 1,280 metres long."], [source, source])
    assert good > bad
    text = classifier.score_text("The bridge opened in 1937. Its span is 1,280 metres long.", source)
    assert len(text.per_sentence) == 2 and 0.0 <= text.minimum <= text.mean <= 1.0


def test_in_window_swaps_make_hard_negatives():
    from hybrid.text.units import word_tokens

    pairs = build_pairs(training_documents(), random.Random(0), max_sentences=400, in_window_share=1.0)
    hidden = [p for p in pairs if p.kind in ("entity_swap", "number_swap")
              and not set(word_tokens(p.claim)) - set(word_tokens(p.source))]
    assert hidden  # the wrong entity/number occurs in the source, so only its role is wrong
