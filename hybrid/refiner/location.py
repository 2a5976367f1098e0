"""Where a refiner comes from: a shipped name (`general`, `summarize`, `general-4-layers`), a local folder, or a hub
id (`owner/name`, fetched once into the hub cache)."""

from __future__ import annotations

import re
from pathlib import Path

from hybrid.errors import HybridError
from hybrid.resources import shipped

CHECKPOINTS = shipped("checkpoints")
SHIPPED_REFINERS = {name: CHECKPOINTS / name for name in ("general", "summarize", "general-4-layers")}
DEFAULT_REFINER = "general-4-layers"  # as good as the 8-layer `general` on validation, and cheaper per step


def resolve_refiner(name: str | None) -> Path | None:
    """A shipped refiner's short name, a folder, or a hub id (`owner/name`, fetched once into the hub cache). None (or
    'default') means the shipped default refiner (DEFAULT_REFINER) if present."""
    if name in (None, "default"):
        folder = SHIPPED_REFINERS[DEFAULT_REFINER]
        return folder if (folder / "refiner_config.json").is_file() else None
    if name in SHIPPED_REFINERS:
        folder = SHIPPED_REFINERS[name]
        if not (folder / "refiner_config.json").is_file():
            raise HybridError(f"the shipped refiner '{name}' is not in {CHECKPOINTS}: pass --refiner PATH to a trained refiner")
        return folder
    folder = Path(name).expanduser()
    if not folder.exists() and HUB_ID.fullmatch(name):
        return _from_hub(name)
    return folder


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _from_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id))
    except Exception as exc:  # offline, unknown repo, no access: every hub failure reads the same to the user
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HybridError(f"no refiner folder '{repo_id}' here, and the Hugging Face hub could not give it ({type(exc).__name__}: "
                          f"{reason[:160]}): pass a local folder, or connect and retry") from exc
