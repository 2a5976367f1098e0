"""Atomic writes: a folder or file appears whole or not at all, and what was there before survives a crash.

    with atomic_folder(run / "checkpoint-latest") as tmp:
        save_file(tensors, str(tmp / "weights.safetensors"))
    # only now does run/checkpoint-latest hold the new files; the old folder was removed after the new one moved in

The work happens in a hidden temporary folder beside the target (same file system, so the final move is one
`os.replace`). A folder that caches a conversion can carry the `COMPLETE` marker, written last: `is_complete` tells
a finished folder from one left by a process that died before this module existed or was killed mid-move.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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
