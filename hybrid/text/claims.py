"""The checkable claims of a text, with where they stand in it: entities, numbers and content words.

The same units serve the grounding metric (hybrid.evaluation.metrics.grounding: how much of an output its source
supports) and grounded generation (`select="unsupported"`: re-noise exactly the draft tokens the source does not
support), so what generation repairs is what evaluation counts.

  * entities: capitalised spans that do not start a sentence, plus acronyms anywhere (``NASA``, ``GPUs``);
    supported when every word of the span occurs in the source (case-insensitive, a plural ``s`` forgiven);
  * numbers: integers, decimals, percentages and years; supported when the same value occurs in the source
    (``1,000`` == ``1000``, ``2.50`` == ``2.5``, ``three`` in the source == ``3``). A list's enumerator (the ``2``
    of a line that opens with ``2.`` or ``2)``) numbers the text's own items and claims nothing, so it is no number;
  * content words: lower-case words of three letters or more that are not function words; supported when the
    source has the word (or its singular). Only grounded generation uses them, and only when asked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator

from hybrid.text.units import split_sentences, word_tokens

_CAP_WORD = r"[A-Z][\w'’-]*"
_CAP_SPAN = re.compile(rf"(?<![\w'’-]){_CAP_WORD}(?:\s+{_CAP_WORD})*")
_ACRONYM = re.compile(r"(?<![\w-])[A-Z][A-Z0-9&-]*[A-Z0-9](?:s)?(?![\w-])")
NUMBER = re.compile(
    r"(?<![\w.,])(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?:\s?(%|percent\b|per cent\b))?(?!\d)"
)
# A list item's number: at the start of a line, followed by "." or ")" and a space (or the text's end).
_ENUMERATOR = re.compile(r"(?m)^[ \t]*\d{1,3}[.)](?=\s|$)")
_WORD = re.compile(r"\w+(?:[-'’]\w+)*")
_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000,
    "million": 1000000, "billion": 1000000000, "dozen": 12, "half": 0.5, "twice": 2,
}
# Capitalised words that are not names when they open a span mid-sentence (e.g. after a colon).
_NOT_NAMES = {"i", "i'm", "i've", "i'd", "i'll"}
_FUNCTION_WORDS = set("""
a an the and or but nor so yet for of in on at to by from with without into onto over under about above below
after before during since until while than then that this these those there here which who whom whose what when
where why how all any both each every few more most other some such no not only own same too very can could will
would shall should may might must do does did done has have had having is are was were be been being am it its
they them their theirs we us our you your he him his she her i me my mine also just as if because though although
whether either neither again further once out up down off per via among between through across against along
around near within upon new one two three first second last many much said says say according
""".split())

KINDS = ("entity", "number", "word")


@dataclass(frozen=True)
class Claim:
    """One unit of a text, with its character span in that text."""

    kind: str  # entity | number | word
    text: str
    start: int
    end: int


def normalise_number(raw: str) -> str:
    """Canonical string of a number: no thousands separators, no trailing decimal zeros (``1,000.50`` -> ``1000.5``)."""
    text = raw.replace(",", "").strip()
    if text.startswith("."):
        text = "0" + text
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    text = text.lstrip("0") or "0"
    if text.startswith("."):
        text = "0" + text
    return text


def number_matches(text: str) -> list[re.Match]:
    """The numbers of ``text`` as ``NUMBER`` matches, without list enumerators (``"1."`` opening a line)."""
    enumerators = {m.end() - 1 for m in _ENUMERATOR.finditer(text)}  # where each enumerator's "." or ")" stands
    return [m for m in NUMBER.finditer(text) if m.end() not in enumerators]


def extract_numbers(text: str) -> list[str]:
    """Distinct numbers in order of first appearance, as written (``"1,000"``, ``"20%"``, ``"3.5"``, ``"1969"``)."""
    seen: dict[str, str] = {}
    for match in number_matches(text):
        value = normalise_number(match.group(1))
        seen.setdefault(value, match.group(0).strip())
    return list(seen.values())


def number_values(text: str, include_words: bool = False) -> set[str]:
    """Canonical values of all numbers in ``text``; with ``include_words``, also small number words (``three``)."""
    values = {normalise_number(m.group(1)) for m in number_matches(text)}
    if include_words:
        for word in word_tokens(text):
            if word in _NUMBER_WORDS:
                values.add(normalise_number(str(_NUMBER_WORDS[word])))
    return values


def _sentences_with_offsets(text: str) -> Iterator[tuple[int, str]]:
    cursor = 0
    for sentence in split_sentences(text):
        start = text.find(sentence, cursor)
        start = cursor if start < 0 else start
        cursor = start + len(sentence)
        yield start, sentence


def _name_spans(sentence: str) -> Iterator[tuple[int, int]]:
    """(start, end) in `sentence` of each capitalised span, without the sentence's opening word and leading 'I'."""
    first_word = re.search(r"[A-Za-z0-9]", sentence)
    opening = first_word.start() if first_word else 0
    for match in _CAP_SPAN.finditer(sentence):
        words = list(re.finditer(r"\S+", match.group(0)))
        if match.start() == opening:
            words = words[1:]  # the sentence's first word is capitalised anyway
        while words and words[0].group(0).lower() in _NOT_NAMES:
            words = words[1:]
        if words:
            yield match.start() + words[0].start(), match.start() + words[-1].end()


def entity_mentions(text: str) -> list[Claim]:
    """Every entity mention with its span: capitalised spans not at a sentence start, and acronyms anywhere.
    An acronym inside a longer span is not a mention of its own."""
    mentions: set[Claim] = set()
    for offset, sentence in _sentences_with_offsets(text):
        spans = list(_name_spans(sentence))
        mentions.update(Claim("entity", sentence[s:e], offset + s, offset + e) for s, e in spans)
        for match in _ACRONYM.finditer(sentence):
            if not any(s <= match.start() and match.end() <= e and (e - s) > len(match.group(0)) for s, e in spans):
                mentions.add(Claim("entity", match.group(0), offset + match.start(), offset + match.end()))
    return sorted(mentions, key=lambda c: (c.start, c.end))


def extract_entities(text: str) -> list[str]:
    """Distinct entity strings: capitalised spans not at a sentence start, and acronyms anywhere."""
    found: dict[str, str] = {}
    for sentence in split_sentences(text):
        for start, end in _name_spans(sentence):
            span = " ".join(sentence[start:end].split())
            found.setdefault(span.lower(), span)
        for match in _ACRONYM.finditer(sentence):
            found.setdefault(match.group(0).lower(), match.group(0))
    # An acronym already covered by a longer span is not counted twice.
    spans = list(found.values())
    return [s for s in spans if not (" " not in s and any(s in other.split() for other in spans if other != s))]


def word_supported(word: str, source_words: set[str]) -> bool:
    """A lower-cased word is supported when the source has it, or its singular / its form without ``'s``."""
    return (word in source_words or (word.endswith("s") and word[:-1] in source_words)
            or (word.endswith("'s") and word[:-2] in source_words))


def entity_supported(entity: str, source_words: set[str]) -> bool:
    """Every word of the entity occurs in the source (``source_words``: lower-cased word tokens)."""
    return all(word_supported(word, source_words) for word in word_tokens(entity))


def _name_and_number_claims(text: str, source: str, kinds: tuple[str, ...]) -> list[tuple[Claim, bool]]:
    """Every name word and number of ``text`` (as ``kinds`` asks), each with whether ``source`` supports it."""
    source_words = set(word_tokens(source))
    found: list[tuple[Claim, bool]] = []
    if "entity" in kinds:
        for mention in entity_mentions(text):
            for word in _WORD.finditer(mention.text):
                claim = Claim("entity", word.group(0), mention.start + word.start(), mention.start + word.end())
                found.append((claim, word_supported(word.group(0).lower(), source_words)))
    if "number" in kinds:
        values = number_values(source, include_words=True)
        found += [(Claim("number", m.group(1), m.start(1), m.end(1)), normalise_number(m.group(1)) in values)
                  for m in number_matches(text)]
    return found


def supported_claims(text: str, source: str, kinds: tuple[str, ...] = ("entity", "number")) -> list[Claim]:
    """The name words and numbers of ``text`` that ``source`` supports, as character spans (the complement of
    ``unsupported_claims`` among entities and numbers)."""
    return sorted({c for c, supported in _name_and_number_claims(text, source, kinds) if supported}, key=lambda c: (c.start, c.end))


def unsupported_claims(text: str, source: str, kinds: tuple[str, ...] = ("entity", "number")) -> list[Claim]:
    """The parts of ``text`` that ``source`` does not support, as character spans: for an entity, each of its words
    the source lacks; for a number, its digits; for a content word, the word. Sorted by position."""
    found = [c for c, supported in _name_and_number_claims(text, source, kinds) if not supported]
    if "word" in kinds:
        source_words = set(word_tokens(source))
        taken = [(c.start, c.end) for c in found]
        for match in _WORD.finditer(text):
            word = match.group(0)
            lower = word.lower()
            if (word.islower() and len(word) >= 3 and not lower.isdigit() and lower not in _FUNCTION_WORDS
                    and not word_supported(lower, source_words)
                    and not any(s < match.end() and match.start() < e for s, e in taken)):
                found.append(Claim("word", word, match.start(), match.end()))
    return sorted(set(found), key=lambda c: (c.start, c.end))
