"""Evaluation suites: a small YAML file says where the prompts come from and what to score.

    name: summarize
    task: summarize            # summarize | continue | facts: decides which metrics apply
    data:
      kind: aclsum             # aclsum | jsonl | facts | passages
      split: test
    max_new_tokens: 96
    prompt_template: "..."     # {source} is replaced by the source text (summarize)

A user's own suite is a jsonl file of {"prompt": ..., "source": ..., "reference": ...} rows (field names
configurable) and a YAML file beside it with `data: {kind: jsonl, path: my.jsonl}`.
"""

from __future__ import annotations

import difflib
import json
import random
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from hybrid.data.aclsum import paper_summaries
from hybrid.data.passages import file_paragraphs
from hybrid.data.shakespeare import play_names, shakespeare_texts
from hybrid.errors import HybridError
from hybrid.resources import shipped

SUITES_DIR = shipped("evals/suites")
TASKS = ("summarize", "continue", "facts")
DATA_KINDS = ("aclsum", "jsonl", "facts", "passages", "shakespeare")


@dataclass
class SuiteData:
    kind: str = "jsonl"
    path: str | None = None  # jsonl / facts / passages file, relative to the suite file
    split: str = "test"  # aclsum split
    prompt_field: str = "prompt"
    source_field: str = "source"
    reference_field: str = "reference"
    prompt_words: int = 60  # passages: words of a passage given as the prompt; the next ones are the reference
    reference_words: int = 60
    seed: int = 0  # passages: which ones are drawn
    plays: list[str] = field(default_factory=list)  # shakespeare: the plays to draw passages from (held out of training)


@dataclass
class Suite:
    name: str
    task: str
    data: SuiteData = field(default_factory=SuiteData)
    max_new_tokens: int = 64
    prompt_template: str = "{prompt}"
    max_source_words: int = 300
    description: str = ""
    refiner: str | None = None  # the refiner this suite is scored with by default (None: the shipped default, general-4-layers)


@dataclass
class Example:
    id: str
    prompt: str  # what the drafter is given (after the template)
    source: str | None = None  # what the output should be grounded in (summaries)
    reference: str | None = None  # a reference output (summary or the passage's true continuation)
    answers: list[str] | None = None  # accepted answers (facts)


def _check_keys(raw: dict, cls, where: str) -> None:
    valid = [f.name for f in fields(cls)]
    for key in raw:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (valid keys: {', '.join(valid)})"
            raise HybridError(f"{where}: unknown key '{key}'{hint}")


def load_suite(name_or_path: str) -> tuple[Suite, Path]:
    """A suite by short name (evals/suites/NAME.yaml) or by path to its YAML file."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = SUITES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SUITES_DIR.glob("*.yaml")))
        raise HybridError(f"no suite '{name_or_path}': give a suite YAML file or one of: {known}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise HybridError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(raw, dict):
        raise HybridError(f"{path}: expected a mapping of suite settings")
    _check_keys(raw, Suite, str(path))
    data = raw.pop("data", {}) or {}
    _check_keys(data, SuiteData, f"{path} data")
    try:
        suite = Suite(**raw, data=SuiteData(**data))
    except TypeError as exc:
        raise HybridError(f"{path}: {exc}") from exc
    if suite.task not in TASKS:
        raise HybridError(f"{path}: task must be one of {', '.join(TASKS)}, got '{suite.task}'")
    if suite.data.kind not in DATA_KINDS:
        raise HybridError(f"{path}: data kind must be one of {', '.join(DATA_KINDS)}, got '{suite.data.kind}'")
    if not isinstance(suite.max_new_tokens, int) or not 1 <= suite.max_new_tokens <= 1024:
        raise HybridError(f"{path}: max_new_tokens must be an integer in [1, 1024]")
    return suite, path.parent


def _aclsum(suite: Suite) -> list[Example]:
    papers = paper_summaries(suite.data.split, source_words=suite.max_source_words)
    return [Example(f"aclsum-{suite.data.split}-{i}", suite.prompt_template.format(source=p.source, prompt=p.source), p.source, p.summary)
            for i, p in enumerate(papers)]


def _jsonl(suite: Suite, base: Path) -> list[Example]:
    path = _data_path(suite, base)
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise HybridError(f"{path}:{number} is not valid JSON ({exc.msg})") from exc
        if suite.data.prompt_field not in row:
            raise HybridError(f"{path}:{number} has no '{suite.data.prompt_field}' field")
        prompt = suite.prompt_template.format(prompt=row[suite.data.prompt_field], source=row.get(suite.data.source_field, ""))
        examples.append(Example(str(row.get("id", number)), prompt, row.get(suite.data.source_field), row.get(suite.data.reference_field)))
    return examples


def _facts(suite: Suite, base: Path) -> list[Example]:
    from hybrid.evaluation.metrics.facts import load_fact_probes

    probes = load_fact_probes(_data_path(suite, base))
    return [Example(p.id, suite.prompt_template.format(prompt=p.prompt), answers=list(p.answers)) for p in probes]


def _passages(suite: Suite, base: Path) -> list[Example]:
    """Paragraphs of a text file: the first words are the prompt, the words after them the reference continuation."""
    path = _data_path(suite, base)
    paragraphs = file_paragraphs(path)
    need = suite.data.prompt_words + suite.data.reference_words // 2
    usable = [p for p in paragraphs if len(p.split()) >= need]
    random.Random(suite.data.seed).shuffle(usable)
    examples = []
    for index, paragraph in enumerate(usable):
        words = paragraph.split()
        prompt = " ".join(words[: suite.data.prompt_words])
        reference = " ".join(words[suite.data.prompt_words : suite.data.prompt_words + suite.data.reference_words])
        examples.append(Example(f"{path.stem}-{index}", suite.prompt_template.format(prompt=prompt), source=prompt, reference=reference))
    return examples


def _shakespeare(suite: Suite) -> list[Example]:
    """Windows of held-out plays: the first words are the prompt, the next ones the reference continuation."""
    every = play_names()
    unknown = [p for p in suite.data.plays if p not in every]
    if unknown or not suite.data.plays:
        raise HybridError(f"suite '{suite.name}': data.plays must name plays among: {', '.join(every)}")
    texts = shakespeare_texts([p for p in every if p not in suite.data.plays])
    window = suite.data.prompt_words + suite.data.reference_words
    examples = []
    for text_index, text in enumerate(texts):
        words = text.split()
        for start in range(0, len(words) - window + 1, window):
            prompt = " ".join(words[start : start + suite.data.prompt_words])
            reference = " ".join(words[start + suite.data.prompt_words : start + window])
            examples.append(Example(f"play{text_index}-{start}", suite.prompt_template.format(prompt=prompt), source=prompt, reference=reference))
    random.Random(suite.data.seed).shuffle(examples)
    return examples


def _data_path(suite: Suite, base: Path) -> Path:
    if not suite.data.path:
        raise HybridError(f"suite '{suite.name}': data kind '{suite.data.kind}' needs a data path")
    path = Path(suite.data.path)
    path = path if path.is_absolute() else (base / path)
    if not path.is_file():
        path = shipped(suite.data.path)
    if not path.is_file():
        raise HybridError(f"suite '{suite.name}': data file {suite.data.path} does not exist")
    return path


def load_examples(suite: Suite, base: Path, limit: int | None = None) -> list[Example]:
    loaders = {"aclsum": lambda: _aclsum(suite), "jsonl": lambda: _jsonl(suite, base),
               "facts": lambda: _facts(suite, base), "passages": lambda: _passages(suite, base),
               "shakespeare": lambda: _shakespeare(suite)}
    examples = loaders[suite.data.kind]()
    if not examples:
        raise HybridError(f"suite '{suite.name}' has no examples")
    return examples[:limit] if limit else examples
