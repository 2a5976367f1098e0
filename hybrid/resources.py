"""Where the shipped files are: refiners, recipes, evaluation suites and their data.

An installed wheel carries them inside the package (`hybrid/_data/`, copied there by setup.py's build step) and
reads them through importlib.resources; a source checkout (an editable install, a contributor's tree) reads them
where they are edited, at the repository's root (checkpoints/, recipes/, evals/...).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[1]
# What setup.py copies into the wheel, relative to the repository's root.
SHIPPED = ("checkpoints", "recipes", "evals/suites", "evals/news", "evals/facts.yaml", "evals/passages", "evals/metrics",
           "evals/hallucinations", "evals/lm_eval")


def shipped(relative: str) -> Path:
    """A shipped file or folder by its repository path (`checkpoints/general`, `evals/suites`, ...)."""
    packaged = files("hybrid").joinpath("_data", *relative.split("/"))
    if packaged.is_dir() or packaged.is_file():
        return Path(str(packaged))
    return SOURCE_ROOT / relative


def in_source_tree() -> bool:
    """True when running from a checkout of the repository (not from an installed wheel)."""
    return (SOURCE_ROOT / "pyproject.toml").is_file() and not files("hybrid").joinpath("_data").is_dir()


def output_root() -> Path:
    """Where default outputs (reports) go: the repository in a source tree, else the working directory."""
    return SOURCE_ROOT if in_source_tree() else Path.cwd()
