"""Closed-book fact probes (``evals/facts.yaml``): does an LM's continuation of a prompt state the known answer?

A continuation is correct when one of the accepted answers occurs, as whole words and case-insensitively,
within its first ``window`` words (10 by default). Thousands separators are ignored ("1,000" == "1000") and
accents are folded ("Brasília" == "Brasilia"). Chat models often restate the prompt first ("The Statue of Liberty
stands in the city of New York"): when the prompt is given and the continuation repeats the prompt's last words
early on, the window starts after that repetition, so a restated prompt does not push the answer out of it.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hybrid.errors import HybridError
from hybrid.resources import shipped
from hybrid.results import Result

DEFAULT_FACTS = shipped("evals/facts.yaml")
DEFAULT_WINDOW = 10
_WORD = re.compile(r"\w+(?:\.\d+)?")


@dataclass(frozen=True)
class FactProbe:
    id: str
    category: str
    prompt: str
    answers: tuple[str, ...]


@dataclass(frozen=True)
class FactResult(Result):
    accuracy: float
    correct: int
    total: int
    per_category: dict[str, float]
    wrong_ids: tuple[str, ...]


def _normalise_words(text: str) -> list[str]:
    folded = unicodedata.normalize("NFKD", text)
    folded = "".join(c for c in folded if not unicodedata.combining(c)).lower()
    folded = re.sub(r"(?<=\d),(?=\d{3}\b)", "", folded)
    folded = folded.replace("₂", "2")
    return _WORD.findall(folded)


def _after_restated_prompt(words: list[str], prompt: str | None) -> int:
    """Index just after the continuation's repetition of the prompt's last (up to 3) words, or 0 if it has none."""
    tail = _normalise_words(prompt or "")[-3:]
    if not tail:
        return 0
    n = len(tail)
    reach = min(len(words), len(_normalise_words(prompt)) + 8)  # a restatement comes first, perhaps after "The answer is:"
    for start in range(reach - n + 1):
        if words[start : start + n] == tail:
            return start + n
    return 0


def answer_in_continuation(continuation: str, answers: Sequence[str], window: int = DEFAULT_WINDOW, prompt: str | None = None) -> bool:
    """True when any accepted answer occurs as consecutive whole words within the first ``window`` words (counted
    after a restatement of ``prompt``, when the continuation starts with one)."""
    words = _normalise_words(continuation)
    start = _after_restated_prompt(words, prompt)
    words = words[start : start + window]
    for answer in answers:
        target = _normalise_words(answer)
        if not target:
            continue
        n = len(target)
        if any(words[i : i + n] == target for i in range(len(words) - n + 1)):
            return True
    return False


def load_fact_probes(path: str | Path = DEFAULT_FACTS) -> list[FactProbe]:
    """Read the probe suite; raises HybridError on a missing file or a malformed entry."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise HybridError(f"fact probe file not found: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    entries = data.get("facts") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise HybridError(f"{path} must hold a non-empty 'facts:' list")
    probes, seen = [], set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry.get("prompt") or not entry.get("answers"):
            raise HybridError(f"{path}: fact #{i} needs a 'prompt' and a non-empty 'answers' list")
        probe_id = str(entry.get("id") or f"fact-{i}")
        if probe_id in seen:
            raise HybridError(f"{path}: duplicate fact id {probe_id!r}")
        seen.add(probe_id)
        answers = entry["answers"] if isinstance(entry["answers"], list) else [entry["answers"]]
        probes.append(FactProbe(probe_id, str(entry.get("category", "other")), str(entry["prompt"]),
                                tuple(str(a) for a in answers)))
    return probes


def score_facts(continuations: Sequence[str], probes: Sequence[FactProbe], window: int = DEFAULT_WINDOW) -> FactResult:
    """Accuracy of continuations (one per probe, in order), overall and per category."""
    if len(continuations) != len(probes):
        raise HybridError(f"got {len(continuations)} continuations for {len(probes)} fact probes")
    if not probes:
        raise HybridError("no fact probes to score")
    by_category: dict[str, list[bool]] = defaultdict(list)
    wrong = []
    for continuation, probe in zip(continuations, probes):
        ok = answer_in_continuation(continuation, probe.answers, window)
        by_category[probe.category].append(ok)
        if not ok:
            wrong.append(probe.id)
    correct = len(probes) - len(wrong)
    return FactResult(
        accuracy=correct / len(probes),
        correct=correct,
        total=len(probes),
        per_category={c: sum(v) / len(v) for c, v in sorted(by_category.items())},
        wrong_ids=tuple(wrong),
    )
