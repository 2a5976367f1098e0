"""Results are dataclasses; `to_dict()` turns one into plain JSON-ready data (tuples become lists)."""

from __future__ import annotations

from dataclasses import asdict


def _plain(value):
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


class Result:
    """Base of the result dataclasses: `to_dict()` for JSON and for `evaluate` metric outputs."""

    def to_dict(self) -> dict:
        return _plain(asdict(self))
