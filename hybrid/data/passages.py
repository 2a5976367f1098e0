"""Plain text files of passages, one paragraph each (blank lines between them, "#" lines are comments), such as
the project's plain-English passages (``evals/passages/plain_english.txt``: training passages, then a held-out
marker line, then held-out ones).
"""

from __future__ import annotations

import re
from pathlib import Path

from hybrid.errors import HybridError
from hybrid.resources import shipped

PLAIN_PASSAGES = shipped("evals/passages/plain_english.txt")
HELD_OUT_MARKER = "## held-out"


def file_paragraphs(path: Path) -> list[str]:
    """The paragraphs of a text file as written (a paragraph starting with "#" is left out)."""
    return [p.strip() for p in re.split(r"\n\s*\n", path.read_text(encoding="utf-8")) if p.strip() and not p.startswith("#")]


def plain_passages(held_out: bool, path: Path = PLAIN_PASSAGES) -> list[str]:
    """The passages before (training) or after (held-out) the held-out marker line, each on one line ("#" lines
    dropped)."""
    if not path.is_file():
        raise HybridError(f"plain-English passages not found at {path}")
    text = path.read_text(encoding="utf-8")
    parts = re.split(r"^" + re.escape(HELD_OUT_MARKER) + r"\s*$", text, maxsplit=1, flags=re.MULTILINE)
    if len(parts) != 2:
        raise HybridError(f"{path} has no '{HELD_OUT_MARKER}' line")
    part = parts[1] if held_out else parts[0]
    paragraphs = [p for p in re.split(r"\n\s*\n", part) if p.strip() and not p.lstrip().startswith("#")]
    return [" ".join(line.strip() for line in p.splitlines() if not line.startswith("#")) for p in paragraphs]
