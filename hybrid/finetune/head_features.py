"""The detection head's training data: the features of a refiner's visible positions, encoded once and stored.

Each training batch is corrupted as the objective says and run through the frozen refiner once; the features of its
visible positions (float16) and whether each token was substituted are kept, and written in safetensors shards
(atomically, so `--resume` and Ctrl-C lose nothing).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from hybrid.atomic import atomic_file
from hybrid.errors import HybridError
from hybrid.finetune.objective import corrupt_batch

FEATURES_FOLDER = "head_features"


@torch.no_grad()
def encode_batch(refiner, batch, generator, objective) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, D) float16, substituted (N,) bool) of one batch's visible positions after corruption."""
    corruption = corrupt_batch(refiner, batch, objective, generator)
    features = refiner(batch.prompt_ids, batch.prompt_mask, corruption.canvas, shown=corruption.shown, head_features=True).head_features
    visible = batch.valid & ~corruption.masked
    return features[visible].half().cpu(), corruption.substituted[visible].cpu()


def save_shard(folder: Path, first_step: int, rows: list[tuple[int, torch.Tensor, torch.Tensor]]) -> None:
    """Write the rows encoded at steps first_step.. as one shard; a partial write never leaves a shard behind."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"features": torch.cat([f for _, f, _ in rows]), "substituted": torch.cat([s for _, _, s in rows]),
               "steps": torch.cat([torch.full((len(s),), step) for step, _, s in rows])}
    target = folder / f"steps-{first_step:07d}.safetensors"
    with atomic_file(target) as tmp:
        save_file(tensors, str(tmp))


def load_shards(folder: Path, before_step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(features, substituted, steps) of every shard, keeping rows encoded before `before_step`; None if none."""
    shards = sorted(folder.glob("steps-*.safetensors")) if folder.is_dir() else []
    if not shards:
        return None
    try:
        loaded = [load_file(str(path)) for path in shards]
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise HybridError(f"detection-head features in {folder} are corrupt ({exc}): delete the folder to encode them again") from exc
    features, substituted, steps = (torch.cat([part[name] for part in loaded]) for name in ("features", "substituted", "steps"))
    keep = steps < before_step
    return features[keep], substituted[keep], steps[keep]


def remove_features(output_dir: Path) -> None:
    """Drop the encoded features once the head is written (they are large, and a finished run never resumes)."""
    folder = output_dir / FEATURES_FOLDER
    for path in folder.glob("*.safetensors") if folder.is_dir() else []:
        path.unlink()
    if folder.is_dir():
        folder.rmdir()


def column_moments(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and standard deviation of float16 rows, summed in float64 chunks (no full float copy)."""
    total = torch.zeros(features.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(features), 8192):
        chunk = features[start : start + 8192].double()
        total += chunk.sum(0)
        squares += (chunk * chunk).sum(0)
    mean = total / len(features)
    return mean.float(), (squares / len(features) - mean * mean).clamp(min=0).sqrt().float()
