"""Factual consistency of a claim with its source: the FactCC-style classifier trained by
``hybrid consistency train`` (checkpoint in ``checkpoints/consistency/``).

``ConsistencyClassifier.score(claims, sources)`` gives P(consistent) per pair. A long source is cut into windows
of a few consecutive sentences (as in training); the windows that share the most words with the claim are
scored and the highest probability is kept. ``score_text`` scores every sentence of a generated text.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hybrid.consistency.model import ConsistencyNet
from hybrid.errors import HybridError
from hybrid.resources import shipped
from hybrid.results import Result
from hybrid.text.units import split_sentences, word_tokens

logger = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = shipped("checkpoints/consistency")
_STOP = {"the", "a", "an", "of", "in", "on", "and", "or", "to", "is", "are", "was", "were", "for", "with", "by",
         "that", "this", "it", "as", "at", "be", "we", "our", "from"}


@dataclass(frozen=True)
class ConsistencyResult(Result):
    """Per-sentence P(consistent) of a text against its source, with mean and minimum (None for empty text)."""

    mean: float | None
    minimum: float | None
    per_sentence: tuple[float, ...]
    inconsistent_sentences: int  # below the checkpoint's threshold


def _content_words(text: str) -> set[str]:
    return {w for w in word_tokens(text) if w not in _STOP}


def source_windows(claim: str, source: str, window_sentences: int, keep: int) -> list[str]:
    """The ``keep`` windows of ``window_sentences`` consecutive source sentences sharing most words with the claim."""
    sentences = split_sentences(source)
    if len(sentences) <= window_sentences:
        return [source]
    claim_words = _content_words(claim)
    windows = [" ".join(sentences[i : i + window_sentences]) for i in range(len(sentences) - window_sentences + 1)]
    ranked = sorted(range(len(windows)), key=lambda i: (-len(claim_words & _content_words(windows[i])), i))
    return [windows[i] for i in ranked[:keep]]


class ConsistencyClassifier:
    """Loads the trained checkpoint once; scores (claim, source) pairs in batches without gradients."""

    def __init__(self, checkpoint: str | Path = DEFAULT_CHECKPOINT, device: str = "cpu", batch_size: int = 32) -> None:
        folder = Path(checkpoint)
        if not folder.is_dir():
            raise HybridError(f"no consistency classifier at {folder}: train one with "
                              "`hybrid consistency train --output FOLDER`")
        self.net = ConsistencyNet.load(folder, device)
        self.config = self.net.config
        self.batch_size = batch_size
        logger.info("consistency classifier loaded from %s", folder)

    @property
    def threshold(self) -> float:
        return self.config.threshold

    def score_pairs(self, claims: Sequence[str], sources: Sequence[str]) -> list[float]:
        """P(consistent) with each source used as given (truncated to the model's length)."""
        import torch

        if len(claims) != len(sources):
            raise HybridError(f"got {len(claims)} claims but {len(sources)} sources: pass one source per claim")
        order = sorted(range(len(claims)), key=lambda i: len(claims[i]) + len(sources[i]))
        probs = [0.0] * len(claims)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            with torch.no_grad():
                logits = self.net.logits([claims[i] for i in batch], [sources[i] for i in batch])
            for index, p in zip(batch, torch.sigmoid(logits).tolist()):
                probs[index] = p
        return probs

    def score(self, claims: Sequence[str], sources: Sequence[str]) -> list[float]:
        """P(consistent) per (claim, source); long sources are windowed and the best window counts."""
        if len(claims) != len(sources):
            raise HybridError(f"got {len(claims)} claims but {len(sources)} sources: pass one source per claim")
        flat_claims, flat_windows, owner = [], [], []
        for i, (claim, source) in enumerate(zip(claims, sources)):
            for window in source_windows(claim, source, self.config.window_sentences, self.config.windows_scored):
                flat_claims.append(claim)
                flat_windows.append(window)
                owner.append(i)
        best = [0.0] * len(claims)
        for i, p in zip(owner, self.score_pairs(flat_claims, flat_windows)):
            best[i] = max(best[i], p)
        return best

    def score_text(self, text: str, source: str) -> ConsistencyResult:
        """Score each sentence of ``text`` against ``source``."""
        sentences = split_sentences(text)
        if not sentences:
            return ConsistencyResult(None, None, (), 0)
        probs = self.score(sentences, [source] * len(sentences))
        return ConsistencyResult(
            mean=sum(probs) / len(probs),
            minimum=min(probs),
            per_sentence=tuple(probs),
            inconsistent_sentences=sum(p < self.threshold for p in probs),
        )
