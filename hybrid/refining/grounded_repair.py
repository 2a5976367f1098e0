"""Grounded repair: every unsupported span of a draft gets candidate fills, and the drafter picks among them.

The re-noised span's fills come from two places:
  * the refiner's own fill of the span at the draft's length (the K-step refine pass, restricted to the source's
    tokens), and
  * copies of the source's own claims of the same kind (its numbers, or the words of its names), at their own
    token lengths, so a name can be repaired by one of another length. The `candidates` best of these by the
    drafter's probability of their first token at the span are kept.
Each candidate is put in place and scored as verification scores any change: the drafter's teacher-forced
log-likelihood of the new tokens and the `window` tokens after them (up to and including the end token) minus the
same for the draft, plus `ground_weight` x (unsupported tokens removed - unsupported tokens added). All candidates
of a batch are scored in one drafter pass over the draft prompts' cache. A span takes its best copy (or fill) when
that scores above 0. Only where none does is cutting the span out (`ground_deletions`) weighed, and taken when it
scores above 0: a cut also removes what the span said, so it never displaces a supported copy (on the planted names,
offering cuts beside copies as equals cut 12 of the 53 planted names, 9 of which a copy repairs). Otherwise the draft stays.

A run of more than MAX_SPAN_TOKENS unsupported tokens is no mis-copied name or number but degenerate text (a
hyphenated chain of 81 tokens on ACLSum test paper 48, which a copy of "AESOP" replaced whole, leaving
"AESOP (AESOP-" and the judge's perplexity 5 -> 381); copying one claim over it cannot mend it, so it is left alone.
Every other repair in the committed reports spans at most 4 tokens; a number's digits are one token each, so a
16-token bound still takes "1,234,567.89".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from hybrid.refining.grounded import unsupported_kinds
from hybrid.text.claims import entity_mentions, number_matches
from hybrid.refiner.logprobs import gather_tokens
from hybrid.refining.verify import DrafterPrompt, DrafterScorer, Proposal

_NAME_WORD = re.compile(r"[A-Z][\w'’-]*")
MAX_SPAN_TOKENS = 16  # longer unsupported runs are left alone (see the module docstring)


@dataclass
class Candidate:
    row: int
    start: int  # the span in the draft row, end exclusive
    end: int
    ids: list[int]  # what replaces draft[start:end]
    origin: str  # "refiner", "source" or "deletion"
    grounding_gain: float = 0.0
    drafter_gain: float = 0.0
    span: int = -1  # the unsupported span it repairs (its first slot); -1: `start`

    def __post_init__(self):
        if self.span < 0:
            self.span = self.start


def source_claims(source: str, kind: str) -> list[str]:
    """The source's own claims of a kind, distinct, in order: its numbers as written, or the words of its names."""
    if kind == "number":
        found = [m.group(1) for m in number_matches(source)]
    elif kind == "entity":
        found = [w.group(0) for m in entity_mentions(source) for w in _NAME_WORD.finditer(m.text)]
    else:
        found = []
    return list(dict.fromkeys(found))


def span_candidates(tokenizer, row: int, ids: list[int], span: tuple[int, int, str], source: str, first_logp: torch.Tensor,
                    count: int) -> list[Candidate]:
    """Up to `count` source copies for draft span ids[start:end], best first by the drafter's log-prob of their first token."""
    start, end, kind = span
    spaced = tokenizer.decode(ids[start:end], skip_special_tokens=True).startswith(" ")
    seen, options = {tuple(ids[start:end])}, []
    for claim in source_claims(source, kind):
        new = tokenizer((" " if spaced else "") + claim, add_special_tokens=False).input_ids
        if new and tuple(new) not in seen:
            seen.add(tuple(new))
            options.append((float(first_logp[new[0]]), Candidate(row, start, end, new, "source")))
    # Like for like where the source has it: a year for a year, a decimal for a decimal, an acronym for an acronym.
    shape = _shape(kind, tokenizer.decode(ids[start:end], skip_special_tokens=True))
    options = [o for o in options if _shape(kind, tokenizer.decode(o[1].ids, skip_special_tokens=True)) == shape] or options
    options.sort(key=lambda pair: -pair[0])
    return [candidate for _, candidate in options[:count]]


CONNECTORS = {",", "in", "of", "the", "at", "from", "for", "by", "a", "an", "on", "to", "and", "with", "near"}


def deletion_candidates(tokenizer, row: int, ids: list[int], span: tuple[int, int, str]) -> list[Candidate]:
    """Cutting the span out: alone, and with the connecting words or comma before it (" in the UK", ", New Zealand"),
    up to three tokens back, so that the rest still reads."""
    start, end, _ = span
    cuts = [Candidate(row, start, end, [], "deletion")]
    back = start
    while back > 0 and start - back < 3 and tokenizer.decode([ids[back - 1]], skip_special_tokens=True).strip().lower() in CONNECTORS:
        back -= 1
    if back < start:
        cuts.append(Candidate(row, back, end, [], "deletion", span=start))
    return cuts


def score_candidates(scorer: DrafterScorer, state: DrafterPrompt, rows: list[list[int]], ended: list[bool],
                     original_logp: torch.Tensor, candidates: list[Candidate], end_id: int, window: int) -> None:
    """Fill each candidate's drafter gain (one batched teacher-forced pass; see the module docstring). A draft cut at
    its length limit has no end token, so neither has its candidates' text."""
    texts = []
    for c in candidates:
        ids = rows[c.row][: c.start] + c.ids + rows[c.row][c.end :] + ([end_id] if ended[c.row] else [])
        texts.append(ids[: c.start + len(c.ids) + window + 1])
    width = max(len(t) for t in texts)
    canvas = torch.tensor([t + [end_id] * (width - len(t)) for t in texts], dtype=torch.long, device=original_logp.device)
    index = torch.tensor([c.row for c in candidates], device=original_logp.device)
    logp = gather_tokens(scorer.logprobs(state.select(index, scorer.model.config), canvas), canvas)
    for i, c in enumerate(candidates):
        new_to = min(c.start + len(c.ids) + window, len(texts[i]) - 1)
        old_to = min(c.end + window, len(rows[c.row]) - (not ended[c.row]))  # an ended draft's end is at len(row)
        c.drafter_gain = float(logp[i, c.start : new_to + 1].sum() - original_logp[c.row, c.start : old_to + 1].sum())


def repair_draft(tokenizer, mask_id: int, draft, canvas: torch.Tensor, kinds_of, sources: list[str], config, scorer: DrafterScorer,
                 state: DrafterPrompt, original_logp: torch.Tensor, prior: torch.Tensor) -> tuple[list[list[int]], list[Proposal]]:
    """`repair` for a batch Draft after the refine stage (`canvas`: its output, used when `config.ground_refill`), with
    the grounded settings of the SamplerConfig `config`."""
    rows = [draft.token_ids[row, : draft.lengths[row]].tolist() for row in range(len(sources))]
    refilled = None
    if config.ground_refill:
        refilled = torch.where(canvas == mask_id, draft.token_ids[:, : canvas.shape[1]], canvas)
    ended = [n < draft.token_ids.shape[1] for n in draft.lengths]
    return repair(tokenizer, scorer, state, rows, kinds_of, ended, original_logp, prior, refilled, sources, config.ground_kinds,
                  config.ground_candidates, config.verify_window, config.ground_weight, tokenizer.eos_token_id, config.ground_deletions)


def repair(tokenizer, scorer: DrafterScorer, state: DrafterPrompt, rows: list[list[int]], kinds_of: list[list[str | None]],
           ended: list[bool], original_logp: torch.Tensor,
           prior: torch.Tensor, refilled: torch.Tensor | None, sources: list[str], kinds: tuple[str, ...], count: int,
           window: int, ground_weight: float, end_id: int, deletions: bool = False) -> tuple[list[list[int]], list[Proposal]]:
    """Repaired token rows and one Proposal per unsupported span (its best candidate, kept or not).

    `rows`: each draft's tokens (no end token), `kinds_of`: their `unsupported_kinds`, `ended`: whether each ended with an
    end token (else it was cut); `original_logp` (B, >= N+1): the drafter's log-prob of each draft
    token and of its end; `prior` (B, >= N, V): the drafter's distribution at each draft slot; `refilled` (B, >= N):
    the refiner's fill of the canvas (None: source copies only); `deletions`: also offer cutting each span out."""
    candidates, spans = [], []
    for row, (ids, source) in enumerate(zip(rows, sources)):
        for span in _runs(kinds_of[row]):
            start, end, _ = span
            if end - start > MAX_SPAN_TOKENS:
                continue
            spans.append((row, start, end))
            if refilled is not None and refilled[row, start:end].tolist() != ids[start:end]:
                candidates.append(Candidate(row, start, end, refilled[row, start:end].tolist(), "refiner"))
            candidates.extend(span_candidates(tokenizer, row, ids, span, source, prior[row, start], count))
            if deletions:
                candidates.extend(deletion_candidates(tokenizer, row, ids, span))
    if not candidates:
        return rows, []
    for c in candidates:  # unsupported tokens the candidate removes minus those it brings
        ids = rows[c.row][: c.start] + c.ids + rows[c.row][c.end :]
        after = unsupported_kinds(tokenizer, ids, sources[c.row], kinds)
        removed = sum(k is not None for k in kinds_of[c.row][c.start : c.end])
        c.grounding_gain = float(removed - sum(k is not None for k in after[c.start : c.start + len(c.ids)]))
    score_candidates(scorer, state, rows, ended, original_logp, candidates, end_id, window)
    final, proposals = [list(r) for r in rows], []
    for row, start, end in sorted(spans, key=lambda s: (s[0], -s[1])):  # right to left: earlier spans keep their place
        mine = [c for c in candidates if (c.row, c.span) == (row, start)]
        if not mine:
            continue
        best = _best([c for c in mine if c.origin != "deletion"], ground_weight)
        if best is None or _score(best, ground_weight) <= 0:  # a cut only where nothing the source offers will do
            best = _best(mine, ground_weight)
        score = _score(best, ground_weight)
        if score > 0:
            final[row][best.start : best.end] = best.ids
        proposals.append(Proposal(row, best.start, best.end - 1, rows[row][best.start : best.end], best.ids, best.drafter_gain, 0.0, score,
                                  score > 0, best.grounding_gain, best.origin))
    proposals.sort(key=lambda p: (p.row, p.start))
    return final, proposals


def _score(candidate: Candidate, ground_weight: float) -> float:
    return candidate.drafter_gain + ground_weight * candidate.grounding_gain


def _best(candidates: list[Candidate], ground_weight: float) -> Candidate | None:
    return max(candidates, key=lambda c: _score(c, ground_weight), default=None)


def _shape(kind: str, text: str) -> tuple[bool, bool]:
    text = text.strip()
    if kind == "number":
        return "." in text, bool(re.fullmatch(r"(1[5-9]|20)\d\d", text))
    return text.isupper(), "-" in text


def _runs(kinds_of: list[str | None]) -> list[tuple[int, int, str]]:
    spans: list[list] = []
    for i, kind in enumerate(kinds_of):
        if kind is not None and spans and spans[-1][1] == i and spans[-1][2] == kind:
            spans[-1][1] = i + 1
        elif kind is not None:
            spans.append([i, i + 1, kind])
    return [tuple(span) for span in spans]
