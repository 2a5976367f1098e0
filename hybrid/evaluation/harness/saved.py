"""Every generated sample of `hybrid eval`, saved as it is made, so that an interrupted run resumes where it stopped.

The report folder holds `generations.jsonl` while a run is under way: one JSON line per sample (hybrid.atomic
appends whole lines and fsyncs), keyed by the system's name, the example's index and a fingerprint of everything the
text depends on (models, dtype, batch size, the system's refine settings, the draft settings, the prompt). A rerun with
the same settings takes the samples found there instead of generating them again, so its report equals that of an
uninterrupted run: the same texts and so the same scores. A resumed sample keeps the timings measured when it was
made. A changed setting changes the fingerprint, and the samples it affects are made again. Once the report is
written the file is removed, so a later run measures everything afresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path

from hybrid.evaluation.harness.suite import Example
from hybrid.processes import is_main_process
from hybrid.atomic import append_records, read_records
from hybrid.evaluation.harness.systems import System

log = logging.getLogger(__name__)
GENERATIONS = "generations.jsonl"
SAVED_FIELDS = ("text", "draft_text", "steps_run", "draft_s", "refine_s", "total_s")  # a Sample's generated part


class SavedSamples:
    """The samples saved in `folder` for a run with `settings` (what every sample's text depends on, JSON-able); with
    no folder they are only kept in memory."""

    def __init__(self, folder: Path | None = None, settings: dict | None = None):
        self.path = Path(folder) / GENERATIONS if folder is not None else None
        self.settings = settings or {}
        records = read_records(self.path, repair=is_main_process()) if self.path is not None else []
        self.records = {(r["system"], r["index"], r["fingerprint"]): r for r in records}
        if self.records:
            log.info("resuming: %d samples saved in %s", len(self.records), self.path)

    def fingerprint(self, system: System, refine_config, example: Example) -> str:
        what = {"run": self.settings, "system": system.name, "refine": asdict(refine_config), "example": asdict(example)}
        return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def get(self, system: System, refine_config, index: int, example: Example) -> dict | None:
        return self.records.get((system.name, index, self.fingerprint(system, refine_config, example)))

    def record(self, system: System, refine_config, index: int, example: Example, **generated) -> dict:
        return {"system": system.name, "index": index, "fingerprint": self.fingerprint(system, refine_config, example),
                "example_id": example.id, **generated}

    def add(self, records: list[dict]) -> None:
        """Keep `records` here and, on the main process, append them to the file."""
        for r in records:
            self.records[(r["system"], r["index"], r["fingerprint"])] = r
        if self.path is not None and is_main_process():
            append_records(self.path, records)

    def finish(self) -> None:
        """The report is written: the saved samples are no longer needed."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)
