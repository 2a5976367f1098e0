"""ACLSum (PyPI ``aclsum``): NLP papers split into sentences (abstract, introduction, conclusion), each with a
three-part summary (challenge, approach, outcome). Its text is tokenized with spaces around punctuation;
``detokenize`` renders it as plain prose.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from hybrid.data.packages import package_folder
from hybrid.errors import HybridError

SECTIONS = ("abstract", "introduction", "conclusion")
SUMMARY_PARTS = ("challenge", "approach", "outcome")


@dataclass(frozen=True)
class PaperSummary:
    source: str  # the paper's first words (abstract, then introduction)
    summary: str  # challenge, approach and outcome, in that order


def detokenize(sentence: str, thorough: bool = True) -> str:
    """Undo ACLSum's space-separated punctuation ("results , ( QA ) 20 % ." -> "results, (QA) 20%.").

    ``thorough=False`` is the lighter rendering the refiners are trained and the suites are scored on: it rejoins only
    "n't" and "'s", and leaves quote marks ("speakers ' problems"), "'re"/"'ll"/... and doubled spaces alone. The two
    differ on about 1% of ACLSum's sentences, so each caller keeps the rendering its shipped model was trained on.
    """
    text = re.sub(r"\s+([,.;:!?%)\]])", r"\1", sentence)
    text = re.sub(r"([(\[])\s+", r"\1", text)
    if not thorough:
        return text.replace(" n't", "n't").replace(" 's", "'s")
    text = re.sub(r"\s+(n't|'s|'re|'ve|'ll|'d)\b", r"\1", text)
    text = re.sub(r"\s+'\s+", "' ", text)
    return re.sub(r"\s{2,}", " ", text).strip()


def aclsum_records(split: str) -> list[dict]:
    """The papers of one split (train, val, test) as ACLSum stores them."""
    path = package_folder("aclsum", "aclsum==0.1.2") / "dataset" / f"{split}.jsonl"
    if not path.is_file():
        raise HybridError(f"ACLSum has no split '{split}' (train, val, test)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def paper_summaries(split: str, source_words: int = 220) -> list[PaperSummary]:
    """Per paper: its first ``source_words`` words (abstract, then introduction) and its reference summary."""
    pairs = []
    for record in aclsum_records(split):
        sentences = record["sentences"]
        source = " ".join(detokenize(s, thorough=False) for s in sentences["abstract"] + sentences["introduction"]).split()
        summary = record["summary"]
        target = " ".join(detokenize(summary[k], thorough=False) for k in SUMMARY_PARTS if summary.get(k))
        pairs.append(PaperSummary(" ".join(source[:source_words]), target))
    return pairs


def paper_texts(split: str) -> list[str]:
    """Running text of ACLSum papers (abstract, introduction, conclusion sentences) of one split."""
    return [" ".join(detokenize(x, thorough=False) for part in SECTIONS for x in record["sentences"][part])
            for record in aclsum_records(split)]
