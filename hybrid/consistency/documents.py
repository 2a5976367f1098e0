"""The documents the consistency classifier's (claim, source) pairs are cut from, as lists of real sentences.

ACLSum paper sections (abstract, introduction, conclusion; train+test papers for training, validation papers held
out) and the project's plain-English passages (training passages, and the held-out ones after the marker line).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from hybrid.data.aclsum import SECTIONS, aclsum_records, detokenize
from hybrid.data.passages import plain_passages
from hybrid.text.units import split_sentences

ACLSUM_TRAIN_SPLITS = ("train", "test")
ACLSUM_HELD_OUT_SPLITS = ("val",)


@dataclass(frozen=True)
class Document:
    doc_id: str
    sentences: tuple[str, ...]
    origin: str  # "aclsum" or "plain"


def _usable(sentence: str) -> bool:
    words = sentence.split()
    if not 6 <= len(words) <= 60:
        return False
    return not re.match(r"^(Figure|Fig\.|Table)\s*\d", sentence)


def load_aclsum_documents(splits: Iterable[str]) -> list[Document]:
    """Each paper section (abstract, introduction, conclusion) becomes one document of detokenized sentences."""
    documents = []
    for split in splits:
        for record in aclsum_records(split):
            for section in SECTIONS:
                sentences = tuple(s for s in (detokenize(x) for x in record["sentences"][section]) if _usable(s))
                if len(sentences) >= 2:
                    documents.append(Document(f"{record['id']}:{section}", sentences, "aclsum"))
    return documents


def load_plain_passages(held_out: bool) -> list[Document]:
    """The plain-English passages before (training) or after (held-out) the held-out marker line."""
    prefix = "heldout" if held_out else "train"
    return [Document(f"plain-{prefix}-{i}", tuple(split_sentences(p)), "plain") for i, p in enumerate(plain_passages(held_out))]


def training_documents() -> list[Document]:
    return load_aclsum_documents(ACLSUM_TRAIN_SPLITS) + load_plain_passages(held_out=False)


def held_out_documents() -> list[Document]:
    return load_aclsum_documents(ACLSUM_HELD_OUT_SPLITS) + load_plain_passages(held_out=True)
