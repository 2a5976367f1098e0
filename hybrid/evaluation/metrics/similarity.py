"""Coherence as adjacent-sentence similarity: mean cosine between consecutive sentences' MiniLM embeddings.

A text whose neighbouring sentences talk about related things scores higher than a text of unrelated sentences;
a text of fewer than two sentences has no score (None).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

from hybrid.evaluation.metrics.minilm import load_minilm, mean_pool
from hybrid.results import Result
from hybrid.text.units import mean_or_none, split_sentences

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CoherenceResult(Result):
    """Mean adjacent-sentence cosine over texts, and per text (None for texts of fewer than two sentences)."""

    mean_adjacent_similarity: float | None
    per_text: tuple[float | None, ...]
    sentence_pairs: int


class SentenceEncoder:
    """MiniLM sentence embeddings (mean pooling, L2-normalised)."""

    def __init__(self, device: str = "cpu", batch_size: int = 32, max_length: int = 256) -> None:
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self.model, self.tokenizer = load_minilm(device)

    def encode(self, sentences: Sequence[str]):
        """A (N x 384) float tensor of unit-length embeddings."""
        import torch

        chunks = []
        for start in range(0, len(sentences), self.batch_size):
            batch = self.tokenizer(
                list(sentences[start : start + self.batch_size]),
                padding=True, truncation=True, max_length=self.max_length, return_tensors="pt",
            ).to(self.device)
            with torch.no_grad():
                hidden = self.model(**batch).last_hidden_state
            chunks.append(torch.nn.functional.normalize(mean_pool(hidden, batch["attention_mask"]), dim=-1).cpu())
        if not chunks:
            return torch.zeros((0, self.model.config.hidden_size))
        return torch.cat(chunks)


def adjacent_similarities(text: str, encoder: SentenceEncoder) -> list[float]:
    """Cosine similarity of each pair of consecutive sentences in ``text``."""
    sentences = split_sentences(text)
    if len(sentences) < 2:
        return []
    vectors = encoder.encode(sentences)
    return (vectors[:-1] * vectors[1:]).sum(dim=-1).tolist()


def score_coherence(texts: Sequence[str], encoder: SentenceEncoder | None = None) -> CoherenceResult:
    """Adjacent-sentence similarity of each text and their mean (over texts that have at least two sentences)."""
    encoder = encoder or SentenceEncoder()
    per_text: list[float | None] = []
    pairs = 0
    for text in texts:
        sims = adjacent_similarities(text, encoder)
        pairs += len(sims)
        per_text.append(sum(sims) / len(sims) if sims else None)
    return CoherenceResult(mean_adjacent_similarity=mean_or_none(per_text), per_text=tuple(per_text), sentence_pairs=pairs)
