"""A training run's log, train_log.jsonl (one JSON record per line), and the recipe as trackers take it."""

from __future__ import annotations

import json
from pathlib import Path

LOG_NAME = "train_log.jsonl"


def append_record(output_dir: Path, record: dict) -> None:
    with (output_dir / LOG_NAME).open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def truncate_log(output_dir: Path, step: int) -> None:
    """Keep the records of steps up to `step`, where a resumed run continues."""
    path = output_dir / LOG_NAME
    if path.is_file():
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        # the head fit's epoch records come after all encoding steps: a resumed run fits (and logs) them again
        kept = [line for line, record in zip(lines, map(json.loads, lines)) if record["step"] <= step and "epoch" not in record]
        path.write_text("".join(line + "\n" for line in kept))


def last_validation(output_dir: Path) -> dict:
    """The validation figures of the run's last record that has them ({} if none)."""
    path = output_dir / LOG_NAME
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    with_validation = [r for r in records if "validation" in r]
    return with_validation[-1]["validation"] if with_validation else {}


def tracker_numbers(record: dict) -> dict:
    """The numbers of a log record a tracker charts (the step goes beside them)."""
    return {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}


def flat_config(tree: dict, prefix: str = "") -> dict:
    """A nested recipe as one level of dotted keys with tracker-friendly values (lists become strings)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= flat_config(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat
