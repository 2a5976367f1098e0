"""A store of the drafter's own text for lookup speculation (after REST, retrieval-based speculative decoding).

Prompt lookup proposes only what the prompt or the text so far already holds, so on open prompts it often has
nothing to propose. The store holds the drafter's own greedy continuations of prompts no evaluation reads: where
the text has no match of its own, lookup proposes what followed the same last n tokens there. The drafter checks every
proposal in its verify pass, so the store changes speed only, never the text.

    store = TokenStore.from_sequences([[1, 2, 3, 4], [5, 6]], base_model="smollm2-135m", tokenizer=tokenizer)
    store.continuation(context=[9, 2, 3], limit=4)   # [4]: what followed 2, 3

The n-grams of the stored text are indexed once, on first use (sorted 64-bit hashes, each hit checked token by
token). Where an n-gram occurs in several places, the proposal follows the next token most of them agree on. A store
is tied to its tokenizer: `fingerprint` names the ids a fixed text gets, and a drafter whose tokenizer gives other ids
refuses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hybrid.atomic import atomic_folder
from hybrid.errors import HybridError

log = logging.getLogger(__name__)

CONFIG_NAME = "lookup_store_config.json"
IDS_NAME = "lookup_store.safetensors"
SHIPPED_NAME = "lookup-store"  # checkpoints/lookup-store
PROBE_TEXT = "The quick brown fox jumps over the lazy dog. 1,234 apples; Émile's café — naïve résumé!\n"
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # any odd 64-bit number: a polynomial hash of n-grams, modulo 2**64
_SEPARATOR = -1  # between stored texts: no n-gram and no proposal crosses it


def fingerprint(tokenizer) -> str:
    """What a store's ids mean: a hash of the ids the tokenizer gives a fixed text, and its vocabulary size."""
    ids = tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]
    return hashlib.sha256(json.dumps([len(tokenizer), ids]).encode()).hexdigest()[:16]


@dataclass
class TokenStoreConfig:
    base_model: str  # the drafter whose text it holds (as the user named it)
    fingerprint: str  # of the tokenizer (see `fingerprint`)
    texts: int = 0
    tokens: int = 0
    provenance: dict = field(default_factory=dict)  # the recipe and the prompts it continued


class TokenStore:
    def __init__(self, ids: np.ndarray, config: TokenStoreConfig):
        self.ids = ids.astype(np.int64)  # the texts one after another, each followed by _SEPARATOR
        self.config = config
        self._indexes: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def from_sequences(cls, sequences: list[list[int]], base_model: str, tokenizer, provenance: dict | None = None) -> "TokenStore":
        flat = [token for sequence in sequences for token in [*sequence, _SEPARATOR]]
        config = TokenStoreConfig(base_model, fingerprint(tokenizer), len(sequences), sum(map(len, sequences)), provenance or {})
        return cls(np.array(flat, dtype=np.int64), config)

    @classmethod
    def load(cls, folder: str | Path) -> "TokenStore":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        folder = Path(folder)
        if not (folder / CONFIG_NAME).is_file() or not (folder / IDS_NAME).is_file():
            raise HybridError(f"{folder} is not a lookup store: it needs {CONFIG_NAME} and {IDS_NAME}")
        try:
            config = TokenStoreConfig(**json.loads((folder / CONFIG_NAME).read_text()))
            ids = load_file(str(folder / IDS_NAME))["ids"]
        except (ValueError, TypeError, KeyError, OSError, SafetensorError) as exc:
            raise HybridError(f"cannot read the lookup store in {folder}: {exc}") from exc
        return cls(ids, config)

    def save(self, folder: str | Path) -> None:
        from safetensors.numpy import save_file

        with atomic_folder(folder) as tmp:
            save_file({"ids": self.ids.astype(np.int32)}, str(tmp / IDS_NAME))
            (tmp / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2) + "\n")

    def fits(self, tokenizer) -> bool:
        return self.config.fingerprint == fingerprint(tokenizer)

    def continuation(self, context: list[int], limit: int, longest: int = 4, shortest: int = 1) -> list[int]:
        """Up to `limit` tokens that followed the context's last n tokens in the stored text, n from `longest` down to
        `shortest` (the first n that matches). Of several places, the latest of those whose next token is the most common
        there; [] when none matches."""
        for n in range(min(longest, len(context)), max(shortest, 1) - 1, -1):
            keys, starts = self._index(n)
            hashed = _hash_one(context[-n:])
            places = starts[np.searchsorted(keys, hashed, side="left"): np.searchsorted(keys, hashed, side="right")]
            places = places[(self.ids[places[:, None] + np.arange(n)] == np.array(context[-n:])).all(1)]  # no hash collision
            if len(places) == 0:
                continue
            following = self.ids[places + n]
            values, counts = np.unique(following, return_counts=True)
            start = int(places[np.isin(following, values[counts == counts.max()])].max()) + n
            follow = self.ids[start: start + limit].tolist()
            return follow[: follow.index(_SEPARATOR)] if _SEPARATOR in follow else follow
        return []

    def _index(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(sorted hashes, starts) of every stored n-gram that a token follows (none spans a separator)."""
        if n not in self._indexes and len(self.ids) <= n:
            self._indexes[n] = np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
        if n not in self._indexes:
            count = len(self.ids) - n
            windows = np.lib.stride_tricks.sliding_window_view(self.ids, n)[:count]
            whole = (windows != _SEPARATOR).all(1) & (self.ids[n:] != _SEPARATOR)
            starts = np.nonzero(whole)[0]
            hashes = _hash_many(windows[starts])
            order = np.argsort(hashes, kind="stable")
            self._indexes[n] = hashes[order], starts[order]
        return self._indexes[n]


def _hash_many(windows: np.ndarray) -> np.ndarray:
    hashes = np.zeros(len(windows), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in windows.T:
            hashes = hashes * _MULTIPLIER + column.astype(np.uint64)
    return hashes


def _hash_one(tokens: list[int]) -> np.uint64:
    return _hash_many(np.array([tokens], dtype=np.int64))[0]


def resolve_token_store(name: str | None, tokenizer) -> TokenStore | None:
    """The lookup store a drafter uses: "auto" (or None) the shipped one when there is one and it fits the tokenizer,
    "none" no store, else a folder, which must fit."""
    from hybrid.resources import shipped

    if name == "none":
        return None
    if name in (None, "auto"):
        folder = shipped(f"checkpoints/{SHIPPED_NAME}")
        if not (folder / CONFIG_NAME).is_file():
            return None
        store = TokenStore.load(folder)
        if not store.fits(tokenizer):
            log.info("the shipped lookup store holds another tokenizer's ids: lookup reads the prompt and text alone")
            return None
        return store
    folder = Path(name).expanduser()
    if not folder.is_dir():
        raise HybridError(f"lookup store folder {folder} does not exist")
    store = TokenStore.load(folder)
    if not store.fits(tokenizer):
        raise HybridError(f"the lookup store in {folder} was made with another tokenizer than this drafter's "
                          f"(made for {store.config.base_model})")
    return store
