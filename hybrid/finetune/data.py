"""Training data: (prompt, target) text pairs from ACLSum, Shakespeare, or the user's own files, then token ids.

Prompts are formatted exactly as the Drafter formats them at generation time (chat template included), because
the refiner sees those prompt ids when it refines a draft.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

from hybrid.data.aclsum import paper_summaries, paper_texts
from hybrid.data.shakespeare import shakespeare_texts
from hybrid.errors import HybridError
from hybrid.finetune.recipe import DataSection

log = logging.getLogger(__name__)

SUMMARY_TEMPLATE = "Summarize the challenge, approach and outcome of this paper in three sentences.\n\n{prompt}"


@dataclass
class TextPair:
    prompt: str
    target: str


@dataclass
class TokenisedExample:
    prompt_ids: list[int]
    target_ids: list[int]
    claims: list[bool] | None = None  # per target token: part of a name or number the prompt supports (objective.claim_mask_rate)


def aclsum_pairs(split: str, source_words: int = 220) -> list[TextPair]:
    """ACLSum papers (their first words) paired with their reference summaries."""
    return [TextPair(paper.source, paper.summary) for paper in paper_summaries(split, source_words)]


def passages_to_pairs(texts: list[str], prompt_words: int, target_words: int) -> list[TextPair]:
    """Cut running text into windows: the first words are the prompt, the next ones the continuation to learn."""
    pairs = []
    window = prompt_words + target_words
    for text in texts:
        words = text.split()
        for start in range(0, len(words) - window + 1, window):
            chunk = words[start : start + window]
            pairs.append(TextPair(" ".join(chunk[:prompt_words]), " ".join(chunk[prompt_words:])))
    return pairs


def general_pairs(config: DataSection) -> list[TextPair]:
    """General English: Shakespeare's plays plus modern scientific prose (ACLSum train papers), interleaved."""
    plays = passages_to_pairs(shakespeare_texts(config.exclude), config.prompt_words, config.target_words)
    papers = passages_to_pairs(paper_texts("train"), config.prompt_words, config.target_words)
    rng = random.Random(0)
    rng.shuffle(plays)
    rng.shuffle(papers)
    mixed = [pair for both in zip(plays, papers) for pair in both]
    return mixed + plays[len(papers):] + papers[len(plays):]


def file_pairs(config: DataSection) -> list[TextPair]:
    """Local json/jsonl/csv/text/markdown files (or a hub dataset id) through `datasets`."""
    import datasets

    files = config.files
    local = [f for f in files if Path(f).exists()]
    if local and len(local) != len(files):
        missing = [f for f in files if f not in local]
        raise HybridError(f"data file {missing[0]} does not exist")
    try:
        if local:
            suffix = Path(local[0]).suffix.lower().lstrip(".")
            kind = {"jsonl": "json", "json": "json", "csv": "csv", "txt": "text", "md": "text", "markdown": "text"}.get(suffix)
            if kind is None:
                raise HybridError(f"unsupported data file type '.{suffix}': use json, jsonl, csv, txt or md")
            extra = {"sample_by": "document"} if kind == "text" else {}
            table = datasets.load_dataset(kind, data_files=local, split="train", **extra)
        else:
            table = datasets.load_dataset(files[0], split=config.split)
    except HybridError:
        raise
    except Exception as exc:  # datasets raises many types for unreachable hubs and bad files
        raise HybridError(f"could not load data {files}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    columns = table.column_names
    if config.prompt_field and config.prompt_field in columns and config.target_field in columns:
        return [TextPair(str(r[config.prompt_field]), str(r[config.target_field])) for r in table]
    if config.text_field in columns:
        return passages_to_pairs([str(r[config.text_field]) for r in table], config.prompt_words, config.target_words)
    raise HybridError(f"data has columns {columns}: set data.prompt_field/target_field or data.text_field")


def load_pairs(config: DataSection) -> list[TextPair]:
    if config.source == "aclsum":
        pairs = aclsum_pairs(config.split)
    elif config.source == "general":
        pairs = general_pairs(config)
    elif config.source == "shakespeare":
        pairs = passages_to_pairs(shakespeare_texts(config.exclude), config.prompt_words, config.target_words)
    else:
        pairs = file_pairs(config)
    pairs = [p for p in pairs if p.prompt.strip() and p.target.strip()]
    if config.max_examples:
        random.Random(0).shuffle(pairs)
        pairs = pairs[: config.max_examples]
    if len(pairs) < config.validation_size + 2:
        raise HybridError(f"only {len(pairs)} examples: need more than data.validation_size={config.validation_size}")
    return pairs


def tokenise(pairs: list[TextPair], tokenizer, config: DataSection) -> list[TokenisedExample]:
    from hybrid.drafting.drafter import encode_prompt  # the Drafter's own formatting: the refiner must see the same prompt ids

    examples = []
    for pair in pairs:
        prompt = config.prompt_template.format(prompt=pair.prompt)
        prompt_ids = encode_prompt(tokenizer, prompt, config.use_chat_template)[-config.max_prompt_tokens :]
        target_ids = tokenizer(pair.target, add_special_tokens=False)["input_ids"][: config.max_target_tokens]
        if target_ids:
            examples.append(TokenisedExample(prompt_ids, target_ids))
    return examples


def split_examples(examples: list[TokenisedExample], validation_size: int, seed: int) -> tuple[list, list]:
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    validation = [examples[i] for i in order[:validation_size]]
    return [examples[i] for i in order[validation_size:]], validation
