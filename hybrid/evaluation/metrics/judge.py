"""Perplexity under an independent judge LM (by default the packaged Gemma-3-270m, not the drafter's family).

``Judge(...).perplexity(texts, contexts)`` returns one perplexity per text: exp of the mean negative
log-likelihood of the text's tokens, each conditioned on the optional context (prompt) and the text before it.
Context tokens are never scored. Batches are padded on the right and sized by a token budget, so the
262k-entry vocabulary's logits stay within a few GB.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

from hybrid.errors import HybridError
from hybrid.evaluation.metrics.judge_cache import GEMMA_ALIAS, gemma_judge_folder

logger = logging.getLogger(__name__)

DEFAULT_JUDGE = GEMMA_ALIAS


@dataclass(frozen=True)
class JudgeConfig:
    """How the judge is loaded and batched."""

    model: str = DEFAULT_JUDGE  # "gemma3-270m", a local folder, or a causal-LM name already in the HF cache
    gguf_file: str | None = None  # set when ``model`` is a folder holding a GGUF file
    max_length: int = 1024  # context + text tokens kept per item (the context is cut from the left first)
    tokens_per_batch: int = 1024  # padded tokens per forward pass (logits are tokens x vocabulary floats)
    device: str = "cpu"
    dtype: str = "float32"


def resolve_judge_source(model: str) -> str:
    """Map the alias of the packaged judge to its converted folder; anything else is passed to transformers."""
    if model == GEMMA_ALIAS:
        return str(gemma_judge_folder())
    return model


def load_causal_lm(model: str, gguf_file: str | None = None, dtype: str = "float32", device: str = "cpu"):
    """Load ``(model, tokenizer)`` for a causal LM: the judge alias, a local folder, or a cached hub name."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_judge_source(model)
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise HybridError(f"unknown dtype {dtype!r}: use float32, bfloat16 or float16")
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        lm = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **kwargs)
    except (OSError, ValueError) as exc:
        raise HybridError(
            f"cannot load judge LM {model!r} ({exc.__class__.__name__}: {exc}); "
            f"use {GEMMA_ALIAS!r}, a local model folder, or a model already in the Hugging Face cache"
        ) from exc
    lm.to(device)
    lm.eval()
    return lm, tokenizer


def _start_token_id(tokenizer) -> int | None:
    """The token a sequence starts with when it has no context (BOS, else CLS, else EOS)."""
    for name in ("bos_token_id", "cls_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return None


class Judge:
    """A frozen causal LM that scores texts by perplexity.

    ``Judge()`` loads the packaged Gemma-3-270m; ``Judge("path/or/name")`` any causal LM; ``Judge(config=...)``
    takes every setting from a ``JudgeConfig`` (its ``model`` wins over the positional one). A text is appended to
    its context as is, so give it a leading space when it continues the context's sentence.
    """

    def __init__(self, model: str = DEFAULT_JUDGE, *, config: JudgeConfig | None = None) -> None:
        self.config = config or JudgeConfig(model=model)
        self.model, self.tokenizer = load_causal_lm(
            self.config.model, self.config.gguf_file, self.config.dtype, self.config.device
        )
        self._start_id = _start_token_id(self.tokenizer)
        pad = self.tokenizer.pad_token_id
        self._pad_id = int(pad) if pad is not None else (self._start_id or 0)
        logger.info("judge LM %s loaded", self.config.model)

    def encode_pair(self, text: str, context: str | None) -> tuple[list[int], int]:
        """Token ids of context + text, and how many leading ids belong to the context (not scored)."""
        prefix: list[int] = [] if self._start_id is None else [self._start_id]
        if context:
            prefix += self.tokenizer(context, add_special_tokens=False).input_ids
        body = self.tokenizer(text, add_special_tokens=False).input_ids
        body = body[: self.config.max_length - 1]
        room = self.config.max_length - len(body)
        if len(prefix) > room:  # keep the start token and the context's end, which matters most
            prefix = prefix[:1] + prefix[len(prefix) - room + 1 :] if room > 1 else prefix[:room]
        if not prefix:  # a model with no start token: the first text token cannot be predicted
            return body, 1
        return prefix + body, len(prefix)

    def token_log_likelihoods(self, texts: Sequence[str], contexts: Sequence[str | None] | None = None) -> list[list[float]]:
        """Per-token log-probabilities (natural log) of each text given its context."""
        import torch

        if contexts is not None and len(contexts) != len(texts):
            raise HybridError(f"got {len(texts)} texts but {len(contexts)} contexts: pass one context per text")
        encoded = [self.encode_pair(t, contexts[i] if contexts else None) for i, t in enumerate(texts)]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
        results: list[list[float]] = [[] for _ in texts]
        start = 0
        while start < len(order):
            longest = len(encoded[order[start]][0])
            size = max(1, self.config.tokens_per_batch // max(longest, 1))
            batch = order[start : start + size]
            start += size
            ids = torch.full((len(batch), longest), self._pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), longest), dtype=torch.long)
            for row, index in enumerate(batch):
                seq = encoded[index][0]
                ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                mask[row, : len(seq)] = 1
            with torch.no_grad():
                logits = self.model(
                    input_ids=ids.to(self.config.device), attention_mask=mask.to(self.config.device)
                ).logits
                shifted = logits[:, :-1].float()
                targets = ids[:, 1:].to(shifted.device)
                picked = -torch.nn.functional.cross_entropy(
                    shifted.reshape(-1, shifted.shape[-1]), targets.reshape(-1), reduction="none"
                ).view(targets.shape).cpu()
                del logits, shifted
            for row, index in enumerate(batch):
                seq, scored_from = encoded[index]
                results[index] = picked[row, scored_from - 1 : len(seq) - 1].tolist()
        return results

    def perplexity(self, texts: Sequence[str], contexts: Sequence[str | None] | None = None) -> list[float]:
        """Perplexity of each text given its optional context; ``nan`` for a text with no tokens."""
        out = []
        for logps in self.token_log_likelihoods(texts, contexts):
            out.append(math.exp(-sum(logps) / len(logps)) if logps else float("nan"))
        return out

