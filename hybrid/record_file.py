"""Append-only JSON-lines files that a crash cannot corrupt: what was written survives, a torn last line is dropped.

    append_records(path, [{"line": 1, "text": "..."}])     # whole lines, flushed and fsynced before it returns
    records = read_records(path, repair=True)             # the complete lines; a torn last line is cut off the file

Each append is one `write` of whole lines followed by `fsync`, so after a crash (even SIGKILL) the file holds every
earlier append whole and at most one partial line at its end, which `read_records` recognises (no newline after it,
or not JSON) and, with `repair`, truncates before anything new is appended after it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from hybrid.errors import HybridError

log = logging.getLogger(__name__)


def append_records(path: str | os.PathLike, records: list[dict]) -> None:
    """Append `records` as JSON lines in one write, then flush and fsync."""
    if not records:
        return
    data = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records).encode("utf-8")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def read_records(path: str | os.PathLike, repair: bool = False) -> list[dict]:
    """The file's complete records in order ([] when it does not exist). A torn last line (from a crash mid-append) is
    left out, and with `repair` cut off the file; a broken line anywhere else is an error that names it."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    records, good_bytes = [], 0
    for number, raw in enumerate(lines, 1):
        last = number == len(lines)  # the bytes after the final newline: empty unless the last append was torn
        if not raw.strip():
            good_bytes += len(raw) + (0 if last else 1)
            continue
        try:
            record = None if last else json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            record = None
        if not isinstance(record, dict):
            if last or number == len(lines) - 1 and not lines[-1].strip():
                log.warning("%s: dropping a partly written last line (the run that wrote it was interrupted)", path)
                if repair:
                    os.truncate(path, good_bytes)
                break
            raise HybridError(f"{path} line {number} is not a JSON object: it was not written by hybrid; move it away or delete it")
        records.append(record)
        good_bytes += len(raw) + 1
    return records
