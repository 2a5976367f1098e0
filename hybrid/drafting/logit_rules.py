"""The rules small-model users add on top of the drafter's logits: `repetition_penalty` and `no_repeat_ngram_size`.

They are Hugging Face's own logits processors, applied to the logits of every slot the drafter chooses a token for,
with the context of that slot (prompt and text so far), so plain and speculative drafting apply them identically and
`model.generate` with the same settings writes the same greedy text.
"""

from __future__ import annotations

import torch

from hybrid.config import DraftConfig


def logit_rules(config: DraftConfig):
    """A callable (context (B, L), logits (B, V)) -> logits, or None when no rule is on."""
    from transformers import LogitsProcessorList, NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor

    rules = LogitsProcessorList()
    if config.repetition_penalty != 1.0:
        rules.append(RepetitionPenaltyLogitsProcessor(config.repetition_penalty))
    if config.no_repeat_ngram_size > 0:
        rules.append(NoRepeatNGramLogitsProcessor(config.no_repeat_ngram_size))
    if not rules:
        return None

    def apply(context: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return rules(context, logits.clone())

    return apply
