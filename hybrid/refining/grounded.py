"""Grounded refinement: which draft tokens the source does not support (`select="unsupported"`).

The units are those of the grounding metric (hybrid.text.claims): an entity word, a number or (when asked) a
content word of the draft that the source lacks. Their characters are mapped back to the draft's tokens, and
exactly those tokens are re-noised; the refiner refills them given the prompt, which holds the source, and the
drafter verifies each change.

Where the source comes from: passed explicitly (`source=`, `hybrid generate --source FILE`), or the prompt's text
after its first blank line (an instruction, a blank line, then the document, as in "Summarize this.\\n\\n<text>").
A prompt with neither has nothing to ground against, which is an error.
"""

from __future__ import annotations

from hybrid.errors import HybridError
from hybrid.config import DEFAULT_GROUND_KINDS
from hybrid.text.claims import supported_claims, unsupported_claims

NO_SOURCE = ("--select unsupported has nothing to ground against: put the source after a blank line in the prompt "
             "(\"Summarize this.\\n\\n<text>\") or pass it with --source FILE")


def grounding_source(prompt: str, source: str | None = None) -> str:
    """The text a draft of `prompt` is grounded in: `source` when given, else the prompt after its first blank line."""
    if source is None:
        head, blank, body = prompt.strip().partition("\n\n")
        source = body if blank else ""
    if not source.strip():
        raise HybridError(NO_SOURCE)
    return source


def token_spans(tokenizer, ids: list[int]) -> list[tuple[int, int]]:
    """Character span of each token in `tokenizer.decode(ids, skip_special_tokens=True)` (from prefix decodes)."""
    spans, previous = [], 0
    for i in range(len(ids)):
        end = len(tokenizer.decode(ids[: i + 1], skip_special_tokens=True))
        spans.append((previous, max(previous, end)))
        previous = max(previous, end)
    return spans


def _claim_kinds(tokenizer, ids: list[int], claims) -> list[str | None]:
    """For each token of `ids`: the kind of the first of `claims` (spans in the decoded text) it carries part of."""
    if not claims:
        return [None] * len(ids)
    return [next((c.kind for c in claims if start < c.end and c.start < end), None) for start, end in token_spans(tokenizer, ids)]


def unsupported_kinds(tokenizer, ids: list[int], source: str, kinds: tuple[str, ...] = DEFAULT_GROUND_KINDS) -> list[str | None]:
    """For each token of `ids`: the kind of the unsupported claim it carries part of, or None."""
    return _claim_kinds(tokenizer, ids, unsupported_claims(tokenizer.decode(ids, skip_special_tokens=True), source, kinds))


def supported_claim_tokens(tokenizer, ids: list[int], source: str, kinds: tuple[str, ...] = DEFAULT_GROUND_KINDS) -> list[bool]:
    """For each token of `ids`: does it carry part of a name or number that `source` supports? (grounded training)"""
    claims = supported_claims(tokenizer.decode(ids, skip_special_tokens=True), source, kinds)
    return [kind is not None for kind in _claim_kinds(tokenizer, ids, claims)]


def unsupported_mask(kinds_of: list[list[str | None]], width: int, device=None):
    """(B, width) bool tensor from each row's `unsupported_kinds`: True where a token carries an unsupported claim."""
    import torch

    mask = torch.zeros(len(kinds_of), width, dtype=torch.bool, device=device)
    for row, kinds in enumerate(kinds_of):
        mask[row, : len(kinds)] = torch.tensor([kind is not None for kind in kinds], dtype=torch.bool)
    return mask


def unsupported_in_drafts(tokenizer, draft, sources: list[str], kinds: tuple[str, ...]):
    """(each row's `unsupported_kinds`, their `unsupported_mask` over the draft's width) for a batch Draft."""
    kinds_of = [unsupported_kinds(tokenizer, draft.token_ids[row, :n].tolist(), source, kinds)
                for row, (n, source) in enumerate(zip(draft.lengths, sources))]
    return kinds_of, unsupported_mask(kinds_of, draft.token_ids.shape[1], draft.token_ids.device)


def source_restriction(tokenizer, sources: list[str], vocab_size: int, chosen, editable):
    """(allowed (B, V), restricted (B, L) like `editable`): the unsupported slots `chosen` draw only from their source's tokens."""
    import torch

    restricted = torch.zeros_like(editable)
    restricted[:, : chosen.shape[1]] = chosen
    return source_tokens(tokenizer, sources, vocab_size, editable.device), restricted


def source_tokens(tokenizer, sources: list[str], vocab_size: int, device=None):
    """(B, vocab_size) bool tensor: the token ids that occur in each source, tokenised as running text and word by word
    with a leading space, so a word at the start of a line is allowed in its mid-sentence form too."""
    import torch

    allowed = torch.zeros(len(sources), vocab_size, dtype=torch.bool, device=device)
    for row, source in enumerate(sources):
        ids = set(tokenizer(source, add_special_tokens=False).input_ids)
        ids.update(tokenizer(" " + " ".join(source.split()), add_special_tokens=False).input_ids)
        allowed[row, torch.tensor(sorted(i for i in ids if i < vocab_size), dtype=torch.long)] = True
    return allowed
