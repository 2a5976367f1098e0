"""Sanity checks that the evaluation layer measures what it claims (figures for reports).

* ``validate_judge``: the judge LM must give real held-out passages a lower perplexity than the same words shuffled.
* ``validate_grounding``: number (and entity) precision must drop when unsupported numbers (names) are planted.
* ``validate_classifier``: balanced accuracy of the consistency classifier on held-out synthetic corruptions.
* ``validate_classifier_on_hallucinations``: the same on real drafter sentences, each labelled by hand against its
  source (``evals/hallucinations/*.jsonl``: what the drafter wrote, not corruptions we made).
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hybrid.consistency.documents import Document, load_aclsum_documents, load_plain_passages
from hybrid.evaluation.metrics.grounding import score_grounding
from hybrid.resources import shipped
from hybrid.results import Result

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JudgeValidation(Result):
    passages: int
    mean_real_perplexity: float
    mean_shuffled_perplexity: float
    real_lower_share: float  # share of passages whose real text has the lower perplexity
    per_passage: tuple[tuple[float, float], ...]  # (real, shuffled)


@dataclass(frozen=True)
class GroundingValidation(Result):
    passages: int
    clean_number_precision: float
    planted_number_precision: float
    clean_entity_precision: float
    planted_entity_precision: float
    number_drop_share: float  # share of passages whose number precision fell after planting
    entity_drop_share: float


@dataclass(frozen=True)
class ClassifierValidation(Result):
    pairs: int
    balanced_accuracy: float
    roc_auc: float
    consistent_accuracy: float
    per_corruption_balanced_accuracy: dict[str, float]
    per_corruption_pairs: dict[str, int]


@dataclass(frozen=True)
class HallucinationValidation(Result):
    sets: dict[str, int]  # file name -> labelled sentences in it
    pairs: int
    hallucinations: int
    balanced_accuracy: float  # (accuracy on supported + accuracy on hallucinated sentences) / 2, at the shipped threshold
    supported_accuracy: float
    hallucination_recall: float
    roc_auc: float  # P(consistent) ranking supported above hallucinated sentences
    per_set_balanced_accuracy: dict[str, float]


HALLUCINATIONS_DIR = shipped("evals/hallucinations")


def held_out_passages(aclsum_abstracts: int = 4) -> list[str]:
    """The held-out plain-English passages plus a few ACLSum validation abstracts (never trained on)."""
    docs: list[Document] = load_plain_passages(held_out=True)
    abstracts = [d for d in load_aclsum_documents(["val"]) if d.doc_id.endswith(":abstract")][:aclsum_abstracts]
    return [" ".join(d.sentences) for d in docs + abstracts]


def shuffle_words(text: str, rng: random.Random) -> str:
    words = text.split()
    rng.shuffle(words)
    return " ".join(words)


def validate_judge(judge=None, passages: Sequence[str] | None = None, seed: int = 0) -> JudgeValidation:
    """Perplexity of real passages vs. the same passages with their words shuffled."""
    from hybrid.evaluation.metrics.judge import Judge

    judge = judge or Judge()
    passages = list(passages) if passages is not None else held_out_passages()
    rng = random.Random(seed)
    shuffled = [shuffle_words(p, rng) for p in passages]
    real_ppl = judge.perplexity(passages)
    shuffled_ppl = judge.perplexity(shuffled)
    pairs = tuple(zip(real_ppl, shuffled_ppl))
    return JudgeValidation(
        passages=len(passages),
        mean_real_perplexity=sum(real_ppl) / len(real_ppl),
        mean_shuffled_perplexity=sum(shuffled_ppl) / len(shuffled_ppl),
        real_lower_share=sum(r < s for r, s in pairs) / len(pairs),
        per_passage=pairs,
    )


def plant_unsupported(text: str, rng: random.Random) -> str:
    """Append a sentence with two numbers and a name that no source supports."""
    year = rng.randint(1700, 1790)
    amount = rng.randint(10_000, 99_999)
    name = rng.choice(["Zorvath Institute", "Quillmere Foundation", "Trebonia Council", "Halvgard Society"])
    return f"{text} According to the {name}, it was first recorded in {year} at a cost of {amount:,} crowns."


def validate_grounding(passages: Sequence[str] | None = None, seed: int = 0) -> GroundingValidation:
    """Grounding of a passage's own first sentences in the passage, before and after planting unsupported facts."""
    from hybrid.text.units import split_sentences

    passages = list(passages) if passages is not None else held_out_passages()
    rng = random.Random(seed)
    clean_n, planted_n, clean_e, planted_e = [], [], [], []
    for passage in passages:
        output = " ".join(split_sentences(passage)[:2])
        clean = score_grounding(output, passage)
        planted = score_grounding(plant_unsupported(output, rng), passage)
        clean_n.append(1.0 if clean.number_precision is None else clean.number_precision)
        clean_e.append(1.0 if clean.entity_precision is None else clean.entity_precision)
        planted_n.append(planted.number_precision)
        planted_e.append(planted.entity_precision)
    n = len(passages)
    return GroundingValidation(
        passages=n,
        clean_number_precision=sum(clean_n) / n,
        planted_number_precision=sum(planted_n) / n,
        clean_entity_precision=sum(clean_e) / n,
        planted_entity_precision=sum(planted_e) / n,
        number_drop_share=sum(p < c for c, p in zip(clean_n, planted_n)) / n,
        entity_drop_share=sum(p < c for c, p in zip(clean_e, planted_e)) / n,
    )


def validate_classifier(classifier=None, per_kind: int = 100, seed: int = 1234) -> ClassifierValidation:
    """Balanced accuracy of the consistency classifier on held-out synthetic corruptions, per type."""
    from hybrid.consistency.classifier import ConsistencyClassifier
    from hybrid.consistency.evaluation import evaluate_predictions, held_out_pairs

    classifier = classifier or ConsistencyClassifier()
    pairs = held_out_pairs(seed=seed, per_kind=per_kind)
    probs = classifier.score_pairs([p.claim for p in pairs], [p.source for p in pairs])
    result = evaluate_predictions(probs, pairs, classifier.threshold)
    corruptions = {k: v for k, v in result.per_kind.items() if v.balanced_accuracy is not None}
    return ClassifierValidation(
        pairs=result.pairs,
        balanced_accuracy=result.balanced_accuracy,
        roc_auc=result.roc_auc,
        consistent_accuracy=result.consistent_accuracy,
        per_corruption_balanced_accuracy={k: v.balanced_accuracy for k, v in corruptions.items()},
        per_corruption_pairs={k: v.pairs for k, v in corruptions.items()},
    )


def load_labelled_sentences(folder: Path = HALLUCINATIONS_DIR) -> dict[str, list[dict]]:
    """Every ``*.jsonl`` in ``folder``: rows with ``source``, ``claim`` and ``consistent`` (1 supported, 0 not)."""
    sets = {}
    for path in sorted(Path(folder).glob("*.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for row in rows:
            if not {"source", "claim", "consistent"} <= set(row) or row["consistent"] not in (0, 1):
                raise ValueError(f"{path}: every row needs source, claim and consistent (0 or 1): {row.get('id', row)}")
        sets[path.stem] = rows
    return sets


def _balanced(probs: Sequence[float], labels: Sequence[int], threshold: float) -> tuple[float, float, float]:
    supported = [p >= threshold for p, y in zip(probs, labels) if y == 1]
    caught = [p < threshold for p, y in zip(probs, labels) if y == 0]
    supported_acc = sum(supported) / len(supported) if supported else float("nan")
    recall = sum(caught) / len(caught) if caught else float("nan")
    return (supported_acc + recall) / 2, supported_acc, recall


def validate_classifier_on_hallucinations(classifier=None, folder: Path = HALLUCINATIONS_DIR) -> HallucinationValidation:
    """Balanced accuracy and AUC of the consistency classifier on hand-labelled sentences the drafter really wrote."""
    from hybrid.evaluation.metrics.auc import roc_auc
    from hybrid.consistency.classifier import ConsistencyClassifier

    sets = load_labelled_sentences(folder)
    rows = [row for set_rows in sets.values() for row in set_rows]
    if not rows:
        raise ValueError(f"no labelled sentences under {folder}")
    classifier = classifier or ConsistencyClassifier()
    probs = classifier.score([r["claim"] for r in rows], [r["source"] for r in rows])  # windowed, as in `hybrid eval`
    labels = [r["consistent"] for r in rows]
    balanced, supported_acc, recall = _balanced(probs, labels, classifier.threshold)
    per_set, start = {}, 0
    for name, set_rows in sets.items():
        end = start + len(set_rows)
        per_set[name] = _balanced(probs[start:end], labels[start:end], classifier.threshold)[0]
        start = end
    return HallucinationValidation(
        sets={name: len(set_rows) for name, set_rows in sets.items()}, pairs=len(rows), hallucinations=labels.count(0),
        balanced_accuracy=balanced, supported_accuracy=supported_acc, hallucination_recall=recall,
        roc_auc=roc_auc(probs, labels), per_set_balanced_accuracy=per_set,
    )
