"""Refining real drafts: greedy drafter continuations of held-out prompts whose reference continuation is known.

Planted substitutes say whether a refiner can find and fix errors; real drafts say whether the default hybrid pass
helps. For each kept group of changes the reference words it puts in and takes out are counted (lower-cased words;
a word counts as put in when the new text has it, the old text lacked it, and the reference holds it), so an edit
is *toward* the reference when it puts in more reference words than it takes out, and *away* in the opposite case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hybrid.results import Result

WORD = re.compile(r"\w+")


@dataclass
class RealDraftFigures(Result):
    drafts: int
    proposals: int  # groups of changes proposed
    accepted: int  # groups kept by verification
    texts_changed: int
    toward_reference: int  # kept groups that put in more reference words than they took out
    away_from_reference: int
    reference_words_in: int
    reference_words_out: int
    unigram_f1_draft: float  # mean unigram F1 of the draft against the reference
    unigram_f1_refined: float


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def reference_moves(old: str, new: str, reference: str) -> tuple[int, int]:
    """(reference words put in, reference words taken out) by replacing `old` with `new`."""
    ref, before, after = set(words(reference)), set(words(old)), set(words(new))
    return len((after - before) & ref), len((before - after) & ref)


def unigram_f1(text: str, reference: str) -> float:
    from collections import Counter

    a, b = Counter(words(text)), Counter(words(reference))
    overlap = sum((a & b).values())
    if not overlap:
        return 0.0
    precision, recall = overlap / sum(a.values()), overlap / sum(b.values())
    return 2 * precision * recall / (precision + recall)


def score_refinements(results, references: list[str]) -> RealDraftFigures:
    """Figures of GenerationResults made with `trace=True` (their `proposals`) against the references."""
    proposals = accepted = toward = away = words_in = words_out = changed = 0
    f1_draft = f1_refined = 0.0
    for result, reference in zip(results, references):
        for proposal in result.proposals or []:
            proposals += 1
            if not proposal["accepted"]:
                continue
            accepted += 1
            put_in, taken_out = reference_moves(proposal["old"], proposal["new"], reference)
            words_in, words_out = words_in + put_in, words_out + taken_out
            toward, away = toward + (put_in > taken_out), away + (put_in < taken_out)
        changed += result.text != result.draft_text
        f1_draft += unigram_f1(result.draft_text, reference)
        f1_refined += unigram_f1(result.text, reference)
    n = max(len(references), 1)
    return RealDraftFigures(len(references), proposals, accepted, changed, toward, away, words_in, words_out,
                            f1_draft / n, f1_refined / n)


def refine_real_drafts(pipe, prompt_ids: list[list[int]], references: list[str], max_new_tokens: int, batch_size: int = 8,
                       **settings) -> tuple[RealDraftFigures, list]:
    """Greedy drafts of tokenised prompts, refined by `pipe` with `settings` (pipeline keywords); (figures, results)."""
    from hybrid.drafting.drafter import DraftConfig

    results = []
    for start in range(0, len(prompt_ids), batch_size):
        rows = prompt_ids[start : start + batch_size]
        with pipe._drafting():
            draft = pipe.drafter.generate_ids(rows, DraftConfig(max_new_tokens=max_new_tokens, keep_distributions=True))
        prompts = [pipe.tokenizer.decode(r, skip_special_tokens=True) for r in rows]
        results += pipe(prompts, max_new_tokens=max_new_tokens, draft=draft, trace=True, **settings)
    return score_refinements(results, references), results
