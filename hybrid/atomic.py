"""Atomic writes: a folder or file appears whole or not at all, and what was there before survives a crash.

    with atomic_folder(run / "checkpoint-latest") as tmp:
        save_file(tensors, str(tmp / "weights.safetensors"))
    # only now does run/checkpoint-latest hold the new files; the old folder was removed after the new one moved in

The work happens in a hidden temporary folder beside the target (same file system, so the final move is one
`os.replace`). A folder that caches a conversion can carry the `COMPLETE` marker, written last: `is_complete` tells
a finished folder from one left by a process that died before this module existed or was killed mid-move.

Append-only JSON-lines files that a crash cannot corrupt: what was written survives, a torn last line is dropped.

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
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from hybrid.errors import HybridError

log = logging.getLogger(__name__)

COMPLETE = ".hybrid-complete"


def is_complete(folder: Path) -> bool:
    """True when `folder` was finished by `atomic_folder(..., marker=...)`."""
    return (Path(folder) / COMPLETE).is_file()


@contextmanager
def atomic_folder(target: str | os.PathLike, marker: str | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder; when the block ends without an error it replaces `target` (with the marker
    file holding `marker` when one is given). On an error the temporary folder is removed and `target` is untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield tmp
        if marker is not None:
            (tmp / COMPLETE).write_text(marker)
        _replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_file(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target` to write one file to; it becomes `target` when the block ends cleanly."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _replace(new: Path, target: Path) -> None:
    """Move a finished folder into place; the old one is removed only after the new one is there."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    try:
        os.replace(new, target)
    except OSError:
        if old is not None and not target.exists():
            os.replace(old, target)  # put the old one back rather than leave nothing
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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
