"""Scoring of the hybrid_facts lm-eval task: the rule of `hybrid eval facts` (hybrid.evaluation.metrics.facts)."""

import json
from pathlib import Path

from hybrid.evaluation.metrics.facts import answer_in_continuation

HERE = Path(__file__).resolve().parent


def load_facts(data_file: str = "facts.jsonl", **_):
    """The probes as a datasets.DatasetDict with one `test` split (`data_file`: relative to this folder)."""
    import datasets

    rows = [json.loads(line) for line in (HERE / data_file).read_text(encoding="utf-8").splitlines() if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def process_results(doc, results):
    return {"answer_in_continuation": float(answer_in_continuation(results[0], doc["answers"], prompt=doc["prompt"]))}
