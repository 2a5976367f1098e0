"""FactCC-style claim transformations: meaning-preserving ones (label consistent) and corruptions (inconsistent).

Each function takes a claim sentence, the sentences of its document (a pool of replacement entities/numbers)
and a ``random.Random``; it returns the transformed claim, or None when it does not apply to this sentence.
"""

from __future__ import annotations

import random
import re
from typing import Callable, Sequence

from hybrid.text.claims import extract_entities

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
_YEAR = re.compile(r"(?<![\w.,])(1[0-9]{3}|20[0-9]{2})(?![\w.,]\d)(?!\d)")
_MONTH = re.compile(r"\b(" + "|".join(MONTHS) + r")\b")
_NUM = re.compile(r"(?<![\w.,])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![\d])")
_AUX = re.compile(
    r"\b(is|are|was|were|can|could|will|would|should|may|might|must|has|have|had|does|do|did)\b(?!\s+not\b)(?!n't)"
)
_NEGATED = re.compile(r"\b(is|are|was|were|can|could|will|would|should|may|might|must|has|have|had|does|do|did)\s+not\s+",
                      re.IGNORECASE)
_CONTRACTED = {"isn't": "is", "aren't": "are", "wasn't": "was", "weren't": "were", "can't": "can", "cannot": "can",
               "couldn't": "could", "won't": "will", "wouldn't": "would", "shouldn't": "should", "doesn't": "does",
               "don't": "do", "didn't": "did", "hasn't": "has", "haven't": "have", "hadn't": "had"}
_SUBJECT_VERB = re.compile(r"\b([Ww]e|[Tt]hey)\s+([a-z]{3,}(?<!ed)(?<!ly))\b")
_PRONOUNS = {"he": "she", "she": "he", "him": "her", "his": "her", "himself": "herself", "herself": "himself"}
_PRONOUN = re.compile(r"\b(he|she|him|his|her|himself|herself)\b", re.IGNORECASE)
_NOT_VERBS = {"also", "then", "the", "all", "both", "first", "further", "each", "only", "thus", "therefore", "now",
              "still", "often", "mainly", "here", "and", "are", "were", "can", "will", "have", "had", "not", "could"}
_SYNONYMS = {
    "show": "demonstrate", "shows": "demonstrates", "propose": "present", "proposes": "presents",
    "use": "employ", "uses": "employs", "used": "employed", "significantly": "substantially",
    "large": "big", "small": "little", "approach": "method", "method": "technique", "improve": "enhance",
    "improves": "enhances", "results": "findings", "however": "yet", "about": "around", "roughly": "about",
    "began": "started", "begin": "start", "famous": "well known", "built": "constructed", "largest": "biggest",
    "important": "significant", "several": "a number of", "many": "numerous", "help": "assist",
    "often": "frequently", "quickly": "rapidly", "moved": "relocated", "died": "passed away", "task": "problem",
}
_OPENERS = re.compile(
    r"^(?:However|Moreover|Furthermore|In addition|In this paper|In this work|For example|For instance|Finally|"
    r"Thus|Therefore|Also|Later|Today|At that time|Since then|In particular|To this end|In contrast|"
    r"(?:In|On|By|During|After|Before|Since) [^,]{1,40}),\s+",
)
_TRAILING_CLAUSE = re.compile(r",\s+(?:which|where|while|who|including|such as|although|but|as|so that|and)\b[^,]*[.!?]?$")
_PARENTHESIS = re.compile(r"\s*\([^()]{1,80}\)")

Transform = Callable[[str, Sequence[str], random.Random], "str | None"]


def _replace_span(text: str, start: int, end: int, new: str) -> str:
    return text[:start] + new + text[end:]


def _capitalise_first(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


# ---------------------------------------------------------------- consistent transformations

def drop_clause(claim: str, document: Sequence[str], rng: random.Random) -> str | None:
    """Remove a parenthesis, an opening adverbial or a trailing subordinate clause (what remains is still entailed)."""
    options = []
    for match in _PARENTHESIS.finditer(claim):
        options.append(_replace_span(claim, match.start(), match.end(), ""))
    opener = _OPENERS.match(claim)
    if opener:
        options.append(_capitalise_first(claim[opener.end():]))
    trailing = _TRAILING_CLAUSE.search(claim)
    if trailing and trailing.start() > 20:
        options.append(claim[: trailing.start()] + ".")
    options = [o for o in options if len(o.split()) >= 5 and o != claim]
    return rng.choice(options) if options else None


def paraphrase(claim: str, document: Sequence[str], rng: random.Random) -> str | None:
    """Swap in synonyms, reformat numbers (1,500 -> 1500, 20% -> 20 percent), or 'we' -> 'the authors'."""
    edits = []
    for match in re.finditer(r"\b\w+\b", claim):
        word = match.group(0)
        if word.lower() in _SYNONYMS:
            repl = _SYNONYMS[word.lower()]
            edits.append((match.start(), match.end(), _capitalise_first(repl) if word[0].isupper() else repl))
    for match in re.finditer(r"\b\d{1,3}(?:,\d{3})+\b", claim):
        edits.append((match.start(), match.end(), match.group(0).replace(",", "")))
    for match in re.finditer(r"\s?%", claim):
        edits.append((match.start(), match.end(), " percent"))
    for match in re.finditer(r"\b[Ww]e\b", claim):
        edits.append((match.start(), match.end(), "The authors" if match.group(0) == "We" else "the authors"))
    if not edits:
        return None
    rng.shuffle(edits)
    chosen = sorted(edits[: rng.randint(1, min(3, len(edits)))], reverse=True)
    out, last_start = claim, len(claim) + 1
    for start, end, new in chosen:  # right to left, skipping overlaps
        if end <= last_start:
            out = _replace_span(out, start, end, new)
            last_start = start
    out = re.sub(r"\bthe authors (\w+)\b", lambda m: "the authors " + _plural_verb(m.group(1)), out)
    out = re.sub(r"\bThe authors (\w+)\b", lambda m: "The authors " + _plural_verb(m.group(1)), out)
    return out if out != claim else None


def _plural_verb(verb: str) -> str:
    return {"am": "are", "was": "were"}.get(verb, verb)


# ---------------------------------------------------------------- corruptions

def _entity_shape(entity: str) -> str:
    if entity in MONTHS:
        return "month"
    if entity.isupper() or re.fullmatch(r"[A-Z0-9&-]+s", entity):
        return "acronym"
    return "name" if " " not in entity else "multiword"


def entity_swap(claim: str, document: Sequence[str], rng: random.Random) -> str | None:
    """Replace one entity of the claim with a different entity from the same document, of the same shape
    (acronym, single name, multi-word name) where possible. Month names are left to ``date_swap``."""
    entities = [e for e in extract_entities(claim) if _entity_shape(e) != "month"]
    if not entities:
        return None
    target = rng.choice(entities)
    target_words = set(target.lower().split())
    claim_lower = claim.lower()
    pool = sorted({
        e for s in document for e in extract_entities(s)
        if _entity_shape(e) != "month" and not target_words & set(e.lower().split()) and e.lower() not in claim_lower
    })
    shape = _entity_shape(target)
    same_shape = [e for e in pool if _entity_shape(e) == shape]
    candidates = same_shape or pool
    if not candidates:
        return None
    replacement = rng.choice(candidates)
    match = re.search(r"(?<![\w-])" + re.escape(target) + r"(?![\w-])", claim)
    if not match:
        return None
    return _replace_span(claim, match.start(), match.end(), replacement)


def number_swap(claim: str, document: Sequence[str], rng: random.Random) -> str | None:
    """Change one number that is not a year: to another number of the document, or perturb it."""
    matches = [m for m in _NUM.finditer(claim) if not _YEAR.fullmatch(m.group(0))]
    if not matches:
        return None
    match = rng.choice(matches)
    original = match.group(0)
    pool = {m.group(0) for s in document for m in _NUM.finditer(s) if not _YEAR.fullmatch(m.group(0))}
    pool.discard(original)
    if pool and rng.random() < 0.5:
        replacement = rng.choice(sorted(pool))
    else:
        replacement = _perturb_number(original, rng)
    return _replace_span(claim, match.start(), match.end(), replacement)


def _perturb_number(text: str, rng: random.Random) -> str:
    integer, _, fraction = text.replace(",", "").partition(".")
    value = int(integer)
    if fraction:
        digits = list(fraction)
        i = rng.randrange(len(digits))
        digits[i] = str((int(digits[i]) + rng.randint(1, 9)) % 10)
        return f"{value}.{''.join(digits)}"
    delta = max(1, int(value * rng.uniform(0.1, 0.6))) if value > 3 else rng.randint(1, 3)
    new = value + delta if (rng.random() < 0.5 or value - delta < 0) else value - delta
    if new == value:
        new = value + 1
    return f"{new:,}" if "," in text else str(new)


def date_swap(claim: str, document: Sequence[str], rng: random.Random) -> str | None:
    """Shift a year by 1-15 years, or replace a month name with another month."""
    options = [("year", m) for m in _YEAR.finditer(claim)] + [("month", m) for m in _MONTH.finditer(claim)]
    if not options:
        return None
    kind, match = rng.choice(options)
    if kind == "year":
        year = int(match.group(0))
        new = str(year + rng.choice([-1, 1]) * rng.randint(1, 15))
    else:
        new = rng.choice([m for m in MONTHS if m != match.group(0)])
    return _replace_span(claim, match.start(), match.end(), new)


def negation(claim: str, document: Sequence[str], rng: random.Random) -> str | None:
    """Insert 'not' after an auxiliary (or 'we do not <verb>'), or remove an existing negation."""
    removals = []
    for match in _NEGATED.finditer(claim):
        removals.append(_replace_span(claim, match.start(), match.end(), match.group(1) + " "))
    for word, plain in _CONTRACTED.items():
        for match in re.finditer(r"\b" + re.escape(word) + r"\b", claim, re.IGNORECASE):
            removals.append(_replace_span(claim, match.start(), match.end(), plain))
    for match in re.finditer(r"\bnever\b", claim):
        removals.append(_replace_span(claim, match.start(), match.end(), "always"))
    insertions = []
    for match in _AUX.finditer(claim):
        insertions.append(_replace_span(claim, match.end(), match.end(), " not"))
    for match in _SUBJECT_VERB.finditer(claim):
        if match.group(2) not in _NOT_VERBS:
            verb = match.group(2)
            insertions.append(_replace_span(claim, match.start(2), match.end(2), "do not " + verb))
    if removals and (not insertions or rng.random() < 0.6):
        return rng.choice(removals)
    return rng.choice(insertions) if insertions else None


def pronoun_swap(claim: str, document: Sequence[str], rng: random.Random) -> str | None:
    """Swap a gendered pronoun (he <-> she, his <-> her, him <-> her, himself <-> herself)."""
    matches = list(_PRONOUN.finditer(claim))
    if not matches:
        return None
    match = rng.choice(matches)
    word = match.group(0)
    lower = word.lower()
    if lower == "her":
        following = claim[match.end():].lstrip()
        next_word = re.match(r"[A-Za-z]+", following)
        possessive = bool(next_word) and next_word.group(0).lower() not in {
            "to", "and", "in", "on", "at", "for", "with", "from", "by", "as", "that", "of", "again", "first"}
        new = "his" if possessive else "him"
    else:
        new = _PRONOUNS[lower]
    if word[0].isupper():
        new = _capitalise_first(new)
    return _replace_span(claim, match.start(), match.end(), new)


CONSISTENT_TRANSFORMS: dict[str, Transform] = {"drop_clause": drop_clause, "paraphrase": paraphrase}
CORRUPTIONS: dict[str, Transform] = {
    "entity_swap": entity_swap,
    "number_swap": number_swap,
    "date_swap": date_swap,
    "negation": negation,
    "pronoun_swap": pronoun_swap,
}
