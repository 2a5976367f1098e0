"""Training checkpoints: refiner weights, optimizer state and trainer state, as safetensors + JSON, written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hybrid.atomic import atomic_folder
from hybrid.errors import HybridError
from hybrid.refiner import read_tensors

LATEST = "checkpoint-latest"
OPTIMIZER_NAME = "optimizer.safetensors"
STATE_NAME = "trainer_state.json"


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    state = optimizer.state_dict()["state"]
    return {f"{index}.{name}": value.detach().cpu().contiguous() if torch.is_tensor(value) else torch.tensor(value)
            for index, entries in state.items() for name, value in entries.items()}


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    full = optimizer.state_dict()
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    full["state"] = state
    optimizer.load_state_dict(full)


def save_checkpoint(output_dir: Path, refiner, optimizer, trainer_state: dict) -> Path:
    target = output_dir / LATEST
    with atomic_folder(target) as tmp:
        refiner.write_to(tmp)
        save_file(optimizer_tensors(optimizer), str(tmp / OPTIMIZER_NAME))
        (tmp / STATE_NAME).write_text(json.dumps(trainer_state, indent=2) + "\n")
    return target


def load_checkpoint(output_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    """(refiner tensors, optimizer tensors, trainer state) of the last checkpoint, or a clear error."""
    folder = output_dir / LATEST
    if not (folder / STATE_NAME).is_file():
        raise HybridError(f"nothing to resume: {folder} holds no checkpoint (run without --resume to start)")
    try:
        state = json.loads((folder / STATE_NAME).read_text())
        return read_tensors(folder), load_file(str(folder / OPTIMIZER_NAME)), state
    except (SafetensorError, OSError, ValueError, HybridError) as exc:
        raise HybridError(f"checkpoint {folder} is corrupt or truncated ({exc})") from exc
