"""A refiner on disk: its config, the fingerprint of the backbone it fits, and its weights (the LoRA layers in peft's
adapter files, the rest in refiner.safetensors). `CheckpointMixin` gives the Refiner its create, load and save."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from hybrid.atomic import atomic_folder
from hybrid.errors import HybridError
from hybrid.refiner.head import split_head_tensors
from hybrid.refiner.location import resolve_refiner

log = logging.getLogger(__name__)

CONFIG_NAME = "refiner_config.json"
WEIGHTS_NAME = "refiner.safetensors"  # what peft does not know: the mask embedding and marker, the detection head
ADAPTER_CONFIG_NAME = "adapter_config.json"  # the LoRA weights in peft's own layout, beside ours
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
MASK_EMBEDDING_KEY = "mask_embedding"
MASK_MARKER_KEY = "mask_marker"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class RefinerConfig:
    base_model: str  # the alias, hub id or folder the refiner was trained on
    base_fingerprint: dict  # architecture figures that must match the backbone it is loaded onto
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    bidirectional_layers: int = 0  # 0: every layer sees the canvas both ways; N: only the top N (the rest stay causal)
    detection_head: bool = False  # a trained replaced-token detector scores visible tokens (hybrid.refiner.head)
    detection_layers: list[int] = field(default_factory=list)  # decoder layers whose outputs it reads ([]: the final state)
    detection_neighbours: int = 0  # it also reads this many positions on each side
    # Proposals come from log p_drafter + residual_weight x log p_refiner (hybrid.refining.sampler): the weight the refiner was
    # trained through, or (for refiners trained before the product objective) the best untrained weight measured.
    residual_weight: float = 1.0
    # What a re-noised slot shows the lower layers: "mask" (the mask embedding) or "draft" (the draft's token there,
    # marked for the top layers by mask_marker; needs bidirectional_layers > 0). The slack always shows the mask.
    renoised_input: str = "mask"
    # For the record (nothing reads it back): the recipe it was trained with as it was given (sections model, data,
    # objective, lora; paths as the recipe named them, a shipped refiner by its name) and `steps`; a run from an initial
    # refiner adds `initial_refiner`, that refiner's name, not that refiner's own record (hybrid.finetune.training).
    training: dict = field(default_factory=dict)


def fingerprint(model) -> dict:
    """Figures that identify a backbone: shapes plus a checksum of a slice of its embedding matrix."""
    cfg = model.config
    embed = model.get_input_embeddings().weight.detach()
    return {
        "model_type": cfg.model_type,
        "vocab_size": int(embed.shape[0]),
        "hidden_size": int(cfg.hidden_size),
        "num_hidden_layers": int(cfg.num_hidden_layers),
        "embedding_checksum": round(float(embed[:64].double().sum()), 4),
        "embedding_magnitude": round(float(embed[:64].double().abs().sum()), 4),
    }


def _same_backbone(saved: dict, actual: dict) -> bool:
    shapes = all(saved.get(k) == actual.get(k) for k in ("model_type", "vocab_size", "hidden_size", "num_hidden_layers"))
    # A signed sum tells different weights apart; the tolerance absorbs bfloat16 rounding of the same weights.
    checksum = abs(saved.get("embedding_checksum", 0.0) - actual["embedding_checksum"])
    return shapes and checksum <= 1e-3 * actual["embedding_magnitude"] + 1e-4


class CheckpointMixin:
    """The Refiner's construction and persistence (hybrid.refiner.model)."""

    @classmethod
    def create(cls, base_model, base_name: str, lora_r: int = 16, lora_alpha: int = 32, lora_dropout: float = 0.0,
               training: dict | None = None, bidirectional_layers: int = 0):
        config = RefinerConfig(base_name, fingerprint(base_model), lora_r, lora_alpha, lora_dropout,
                               bidirectional_layers=bidirectional_layers, training=training or {})
        return cls(base_model, config)

    @classmethod
    def from_pretrained(cls, name: str, base_model) -> "Refiner":
        """A refiner by shipped name, folder or hub id (hybrid.refiner.location), loaded onto `base_model`."""
        folder = resolve_refiner(name)
        if folder is None:
            raise HybridError("no shipped refiner is installed: pass a folder or a hub id")
        return cls.load(folder, base_model)

    @classmethod
    def load(cls, path: str | os.PathLike, base_model, bidirectional_layers: int | None = None) -> "Refiner":
        """Load a saved refiner onto `base_model`, refusing a backbone it was not trained for. With
        `bidirectional_layers` other than the saved layout's, the refiner is laid out anew (`relaid_out`): a start for
        training, since the kept LoRA layers were trained over a different stack below them."""
        folder = Path(path)
        config = read_config(folder)
        actual = fingerprint(base_model)
        if not _same_backbone(config.base_fingerprint, actual):
            raise HybridError(
                f"refiner {folder} was trained for base model '{config.base_model}' "
                f"({config.base_fingerprint.get('model_type')}, {config.base_fingerprint.get('num_hidden_layers')} layers, "
                f"vocab {config.base_fingerprint.get('vocab_size')}) and does not fit this drafter: use --draft-model {config.base_model}"
            )
        tensors = read_tensors(folder)
        saved_layers = config.bidirectional_layers
        if bidirectional_layers is not None and bidirectional_layers != saved_layers:
            config.bidirectional_layers = bidirectional_layers
        refiner = cls(base_model, config)
        if config.bidirectional_layers != saved_layers:
            tensors = relaid_out(tensors, refiner.trainable_state(), f"{folder} ({saved_layers} -> {bidirectional_layers} bidirectional layers)")
        refiner.load_tensors(tensors, source=str(folder))
        return refiner

    def trainable_state(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        state = {k: v.detach().float().contiguous().cpu() for k, v in get_peft_model_state_dict(self.model).items()}
        state[MASK_EMBEDDING_KEY] = self.mask_embedding.detach().float().cpu()
        if self.mask_marker is not None:
            state[MASK_MARKER_KEY] = self.mask_marker.detach().float().cpu()
        if self.detection_head is not None:
            state |= self.detection_head.tensors()
        return state

    def load_tensors(self, tensors: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
        from peft import set_peft_model_state_dict

        if MASK_EMBEDDING_KEY not in tensors:
            raise HybridError(f"{source} holds no mask embedding: it is not a hybrid refiner checkpoint")
        head, tensors = split_head_tensors(tensors)
        mask = tensors.pop(MASK_EMBEDDING_KEY)
        marker = tensors.pop(MASK_MARKER_KEY, None)
        expected = set(split_head_tensors(self.trainable_state())[1]) - {MASK_EMBEDDING_KEY, MASK_MARKER_KEY}
        if set(tensors) != expected or (marker is None) != (self.mask_marker is None):
            raise HybridError(f"{source} does not match this refiner's LoRA layout ({len(tensors)} tensors, expected {len(expected)})")
        if bool(head) != (self.detection_head is not None):
            raise HybridError(f"{source}: its config and weights disagree about the detection head")
        if head:
            try:
                self.detection_head.load_tensors(head)
            except RuntimeError as exc:
                raise HybridError(f"{source}: its detection head does not match the layout its config names ({exc})".splitlines()[0]) from exc
        with torch.no_grad():
            self.mask_embedding.copy_(mask.to(self.mask_embedding))
            if marker is not None:
                self.mask_marker.copy_(marker.to(self.mask_marker))
        set_peft_model_state_dict(self.model, tensors)

    def write_to(self, folder: Path) -> None:
        """Write config and weights into an existing folder (not atomic: see `save`): the LoRA weights in peft's layout
        (adapter_config.json naming the real base model, adapter_model.safetensors), the rest in refiner.safetensors."""
        import copy

        from safetensors.torch import save_file

        from hybrid.models import hub_name

        state = self.trainable_state()
        ours = {k: state.pop(k) for k in list(state) if k in (MASK_EMBEDDING_KEY, MASK_MARKER_KEY) or k not in self._lora_keys()}
        save_file(ours, str(folder / WEIGHTS_NAME), metadata={"format": "hybrid-refiner"})
        save_file(state, str(folder / ADAPTER_WEIGHTS_NAME), metadata={"format": "pt"})
        peft_config = copy.deepcopy(self.model.peft_config["default"])
        peft_config.base_model_name_or_path = hub_name(self.config.base_model)
        peft_config.save_pretrained(str(folder))
        (folder / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2) + "\n")

    def _lora_keys(self) -> set[str]:
        from peft import get_peft_model_state_dict

        return set(get_peft_model_state_dict(self.model))

    def save(self, path: str | os.PathLike) -> None:
        """Write config and weights into `path` atomically: a crash leaves the previous checkpoint intact."""
        with atomic_folder(path) as tmp:
            self.write_to(tmp)

    def push_to_hub(self, repo_id: str, private: bool = False, token: str | None = None,
                    commit_message: str = "Upload hybrid refiner") -> str:
        """Upload this refiner (peft adapter + our tensors + config + a model card) to the hub repo `repo_id`; returns
        the commit URL. `from_pretrained`/`--refiner` take the same id back."""
        from huggingface_hub import HfApi

        from hybrid.finetune.model_card import write_card

        with tempfile.TemporaryDirectory(prefix="hybrid-push-") as tmp:
            folder = Path(tmp) / repo_id.split("/")[-1]
            folder.mkdir()
            self.write_to(folder)
            write_card(folder)
            try:
                api = HfApi(token=token)
                api.create_repo(repo_id, private=private, exist_ok=True)
                return str(api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message))
            except Exception as exc:  # offline, no token, no rights: one line for the user
                raise HybridError(f"could not push to the hub repo '{repo_id}' ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})") from exc


def relaid_out(saved: dict[str, torch.Tensor], fresh: dict[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """A saved refiner's tensors fitted to another LoRA layout, `fresh` (a new refiner's `trainable_state`): layers in
    both keep their saved LoRA weights, layers only in the new layout start fresh (LoRA B is zero, so they start as the
    base layer), saved layers outside it are dropped; the mask embedding and the detection head carry over, and a mask
    marker only where the new layout has one (fresh, zero, if the saved refiner had none)."""
    lora = [key for key in fresh if key not in saved and "lora_" in key]
    dropped = [key for key in saved if key not in fresh and "lora_" in key]
    out = {key: value for key, value in saved.items() if key not in dropped}
    out |= {key: fresh[key] for key in lora}
    if MASK_MARKER_KEY in fresh:
        out.setdefault(MASK_MARKER_KEY, fresh[MASK_MARKER_KEY])
    else:
        out.pop(MASK_MARKER_KEY, None)
    log.info("refiner %s laid out anew: %d LoRA tensors kept, %d dropped, %d fresh", what,
             sum("lora_" in key for key in out) - len(lora), len(dropped), len(lora))
    return out


def read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a saved refiner: refiner.safetensors, plus peft's adapter file where there is one (refiners
    saved before it hold their LoRA weights in refiner.safetensors)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    tensors = {}
    for name in (WEIGHTS_NAME, ADAPTER_WEIGHTS_NAME) if (folder / ADAPTER_WEIGHTS_NAME).exists() else (WEIGHTS_NAME,):
        try:
            tensors |= load_file(str(folder / name))
        except (SafetensorError, OSError, ValueError) as exc:
            raise HybridError(f"refiner weights {folder / name} are corrupt or truncated ({exc}): retrain or re-download them") from exc
    return tensors


def read_config(folder: Path) -> RefinerConfig:
    if not folder.is_dir():
        raise HybridError(f"refiner folder {folder} does not exist")
    try:
        raw = json.loads((folder / CONFIG_NAME).read_text())
        return RefinerConfig(**raw)
    except FileNotFoundError as exc:
        raise HybridError(f"{folder} holds no {CONFIG_NAME}: it is not a hybrid refiner checkpoint") from exc
    except (json.JSONDecodeError, TypeError) as exc:
        raise HybridError(f"{folder / CONFIG_NAME} is corrupt or from another version ({exc})") from exc
