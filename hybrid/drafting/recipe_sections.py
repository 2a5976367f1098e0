"""Recipes of one top-level section whose keys are a dataclass's fields (the block drafter's, the lookup store's): read
from a file or a shipped recipe's name, with `section.key=value` overrides, and one clear error for a bad key or type."""

from __future__ import annotations

from dataclasses import fields

import yaml

from hybrid.errors import HybridError


def read_section(name: str, section: str, cls, overrides: list[str] = ()):
    """The recipe in file or shipped recipe `name` as a `cls`, or None when the file has no `section` (another kind)."""
    from hybrid.finetune.recipe import resolve_recipe

    path = resolve_recipe(name)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise HybridError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    return section_dataclass(raw, section, cls, list(overrides)) if isinstance(raw, dict) and section in raw else None


def section_dataclass(raw: dict, section: str, cls, overrides: list[str] = ()):
    """`cls` from the parsed YAML's `section`, with `section.key=value` overrides; nothing else may sit beside it."""
    values = dict(raw.get(section) or {})
    for override in overrides:
        key, _, value = override.partition("=")
        if not key.startswith(section + ".") or not value:
            raise HybridError(f"override {override!r}: give {section}.KEY=VALUE")
        values[key[len(section) + 1:]] = yaml.safe_load(value)
    known = {f.name: f for f in fields(cls)}
    unknown = [k for k in values if k not in known] + sorted(set(raw) - {section})
    if unknown:
        raise HybridError(f"unknown recipe key {unknown[0]!r}: this recipe takes {section}.{{{', '.join(known)}}}")
    recipe = cls(**values)
    for f in fields(recipe):
        value = getattr(recipe, f.name)
        if not isinstance(value, type(f.default)) and not (f.type == "float" and isinstance(value, int)):
            raise HybridError(f"{section}.{f.name} must be {type(f.default).__name__}, got {value!r}")
    return recipe
