"""Synthetic (claim, source) pairs for the factual-consistency classifier, built from real source sentences.

Documents come from ACLSum (paper abstracts, introductions and conclusions; train+test papers for training,
validation papers held out) and from the project's plain-English passages (``evals/passages/plain_english.txt``,
split into training and held-out passages). A claim is one document sentence, transformed or not; its source is a
window of 1-3 consecutive sentences of the same document that contains the original sentence.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from hybrid.errors import HybridError
from hybrid.evaluation.consistency_corruptions import CONSISTENT_TRANSFORMS, CORRUPTIONS
from hybrid.text.units import split_sentences
from hybrid.resources import shipped

PLAIN_PASSAGES = shipped("evals/passages/plain_english.txt")
HELD_OUT_MARKER = "## held-out"
ACLSUM_TRAIN_SPLITS = ("train", "test")
ACLSUM_HELD_OUT_SPLITS = ("val",)
UNSUPPORTED = "unsupported"  # a sentence of the same document from outside the source window


@dataclass(frozen=True)
class Document:
    doc_id: str
    sentences: tuple[str, ...]
    origin: str  # "aclsum" or "plain"


@dataclass(frozen=True)
class ClaimPair:
    claim: str
    source: str
    label: int  # 1 consistent, 0 inconsistent
    kind: str  # identity / neighbour / drop_clause / paraphrase, or a corruption name
    origin: str


def detokenize(sentence: str) -> str:
    """Undo ACLSum's space-separated punctuation ("results , ( QA ) 20 % ." -> "results, (QA) 20%.")."""
    text = re.sub(r"\s+([,.;:!?%)\]])", r"\1", sentence)
    text = re.sub(r"([(\[])\s+", r"\1", text)
    text = re.sub(r"\s+(n't|'s|'re|'ve|'ll|'d)\b", r"\1", text)
    text = re.sub(r"\s+'\s+", "' ", text)
    return re.sub(r"\s{2,}", " ", text).strip()


def _usable(sentence: str) -> bool:
    words = sentence.split()
    if not 6 <= len(words) <= 60:
        return False
    return not re.match(r"^(Figure|Fig\.|Table)\s*\d", sentence)


def aclsum_folder() -> Path:
    spec = importlib.util.find_spec("aclsum")
    if spec is None or spec.origin is None:
        raise HybridError("the ACLSum package is missing: run `bash scripts/install.sh` (it installs aclsum==0.1.2)")
    return Path(spec.origin).resolve().parent / "dataset"


def load_aclsum_documents(splits: Iterable[str]) -> list[Document]:
    """Each paper section (abstract, introduction, conclusion) becomes one document of detokenized sentences."""
    documents = []
    for split in splits:
        path = aclsum_folder() / f"{split}.jsonl"
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                for section in ("abstract", "introduction", "conclusion"):
                    sentences = tuple(s for s in (detokenize(x) for x in record["sentences"][section]) if _usable(s))
                    if len(sentences) >= 2:
                        documents.append(Document(f"{record['id']}:{section}", sentences, "aclsum"))
    return documents


def load_plain_passages(held_out: bool, path: Path = PLAIN_PASSAGES) -> list[Document]:
    """The plain-English passages before (training) or after (held-out) the held-out marker line."""
    if not path.is_file():
        raise HybridError(f"plain-English passages not found at {path}")
    text = path.read_text(encoding="utf-8")
    parts = re.split(r"^" + re.escape(HELD_OUT_MARKER) + r"\s*$", text, maxsplit=1, flags=re.MULTILINE)
    if len(parts) != 2:
        raise HybridError(f"{path} has no '{HELD_OUT_MARKER}' line")
    train_part, held_part = parts
    part = held_part if held_out else train_part
    paragraphs = [p for p in re.split(r"\n\s*\n", part) if p.strip() and not p.lstrip().startswith("#")]
    paragraphs = [" ".join(line.strip() for line in p.splitlines() if not line.startswith("#")) for p in paragraphs]
    prefix = "heldout" if held_out else "train"
    return [Document(f"plain-{prefix}-{i}", tuple(split_sentences(p)), "plain") for i, p in enumerate(paragraphs)]


def training_documents() -> list[Document]:
    return load_aclsum_documents(ACLSUM_TRAIN_SPLITS) + load_plain_passages(held_out=False)


def held_out_documents() -> list[Document]:
    return load_aclsum_documents(ACLSUM_HELD_OUT_SPLITS) + load_plain_passages(held_out=True)


def source_window(document: Document, index: int, rng: random.Random, size: int | None = None) -> str:
    """1-3 consecutive sentences (``size`` or random) that contain sentence ``index``."""
    n = len(document.sentences)
    size = min(size or rng.randint(1, 3), n)
    first = rng.randint(max(0, index - size + 1), min(index, n - size))
    return " ".join(document.sentences[first : first + size])


def _unsupported_claim(document: Document, index: int, rng: random.Random) -> str | None:
    far = [j for j in range(len(document.sentences)) if abs(j - index) > 3]
    return document.sentences[rng.choice(far)] if far else None


# Corruptions that take their replacement from a pool of sentences: drawing it from the source window itself
# makes a hard negative (the wrong entity or number does occur in the source, just not in that role).
POOLED_CORRUPTIONS = ("entity_swap", "number_swap")


def pairs_for_sentence(document: Document, index: int, rng: random.Random, exhaustive: bool = False,
                       window_size: int | None = None, in_window_share: float = 0.0) -> list[ClaimPair]:
    """Pairs for one sentence. Default: one consistent + one inconsistent pair (random applicable kinds).
    ``exhaustive``: every applicable kind once (used for held-out evaluation). ``in_window_share``: how often
    entity/number swaps take their replacement from the source window rather than the whole document."""
    sentence = document.sentences[index]
    source = source_window(document, index, rng, window_size)
    window_pool = split_sentences(source)
    make = lambda claim, label, kind: ClaimPair(claim, source, label, kind, document.origin)  # noqa: E731

    positives = [make(sentence, 1, "identity")]
    for name, transform in CONSISTENT_TRANSFORMS.items():
        out = transform(sentence, document.sentences, rng)
        if out and out != sentence:
            positives.append(make(out, 1, name))
    negatives = []
    for name, corrupt in CORRUPTIONS.items():
        out = None
        if name in POOLED_CORRUPTIONS and in_window_share and rng.random() < in_window_share:
            out = corrupt(sentence, window_pool, rng)
        out = out or corrupt(sentence, document.sentences, rng)
        if out and out.lower() != sentence.lower():
            negatives.append(make(out, 0, name))
    unsupported = _unsupported_claim(document, index, rng)
    if unsupported and unsupported not in source:
        negatives.append(make(unsupported, 0, UNSUPPORTED))
    if exhaustive:
        return positives + negatives
    chosen = []
    # The identity pair is easy; prefer the transformed positives when there are any.
    transformed = positives[1:]
    chosen.append(rng.choice(transformed) if transformed and rng.random() < 0.7 else positives[0])
    if negatives:  # an unsupported sentence is almost always available: draw it less often
        weights = [0.4 if p.kind == UNSUPPORTED else 1.0 for p in negatives]
        chosen.append(rng.choices(negatives, weights=weights, k=1)[0])
    return chosen


def build_pairs(documents: Sequence[Document], rng: random.Random, max_sentences: int | None = None,
                exhaustive: bool = False, window_size: int | None = None,
                origin_weights: dict[str, int] | None = None, in_window_share: float = 0.0) -> list[ClaimPair]:
    """Pairs from (a sample of) the documents' sentences; ``origin_weights`` repeats sentences of an origin."""
    weights = origin_weights or {}
    slots = [(d, i) for d in documents for i in range(len(d.sentences)) for _ in range(weights.get(d.origin, 1))]
    rng.shuffle(slots)
    if max_sentences is not None:
        slots = slots[:max_sentences]
    pairs = []
    for document, index in slots:
        pairs.extend(pairs_for_sentence(document, index, rng, exhaustive=exhaustive, window_size=window_size,
                                        in_window_share=in_window_share))
    return pairs
