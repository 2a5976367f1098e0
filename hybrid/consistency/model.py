"""The consistency classifier's network: MiniLM cross-encoding [claim, source], with its top layers fine-tuned
and a small head on [CLS; mean of tokens]. Only the fine-tuned layers, the head and a learned "novel token"
marker are saved (safetensors); the frozen layers are taken from the installed MiniLM package at load time.

The marker is added to the hidden state of each claim token whose word piece does not occur in the source, on the
way into the first fine-tuned layer: a cheap lexical hint (a swapped number or an inserted "not" is usually
novel) that the fine-tuned layers learn to weigh against harmless novelty such as synonyms.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hybrid.errors import HybridError
from hybrid.evaluation.metrics.minilm import MINILM_PACKAGE, load_minilm, mean_pool

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"


@dataclass
class ConsistencyConfig:
    """What the checkpoint holds and how inputs are built."""

    encoder_package: str = MINILM_PACKAGE
    encoder_version: str = "0.1.0"
    trainable_layers: list[int] = field(default_factory=lambda: [4, 5])
    head_hidden: int = 256
    max_length: int = 160  # claim + source tokens per pair
    window_sentences: int = 3  # source sentences per window when scoring a long source
    windows_scored: int = 2  # best-overlapping windows scored per claim (the max is kept)
    threshold: float = 0.5

    def save(self, folder: Path) -> None:
        (folder / CONFIG_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> "ConsistencyConfig":
        path = folder / CONFIG_FILE
        if not path.is_file():
            raise HybridError(f"no consistency classifier at {folder} (missing {CONFIG_FILE}); "
                              "train one with `hybrid consistency train --output FOLDER`")
        return cls(**json.loads(path.read_text()))


def _build_head(hidden: int, head_hidden: int):
    import torch.nn as nn

    return nn.Sequential(nn.Linear(2 * hidden, head_hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(head_hidden, 1))


class ConsistencyNet:
    """Wraps the encoder and head; a thin object so that this module imports without torch."""

    def __init__(self, config: ConsistencyConfig, device: str = "cpu") -> None:
        import torch

        self.config = config
        self.device = device
        self.encoder, self.tokenizer = load_minilm(device)
        layers = len(self.encoder.encoder.layer)
        if not config.trainable_layers or config.trainable_layers != list(range(layers - len(config.trainable_layers), layers)):
            raise HybridError(f"trainable_layers must be the top layers of the {layers}-layer encoder, "
                              f"got {config.trainable_layers}")
        self.first_trainable = config.trainable_layers[0]
        self.head = _build_head(self.encoder.config.hidden_size, config.head_hidden).to(device)
        self.marker = torch.nn.Embedding(2, self.encoder.config.hidden_size).to(device)
        torch.nn.init.zeros_(self.marker.weight)
        for parameter in self.encoder.parameters():
            parameter.requires_grad = False
        torch.manual_seed(0)

    # -------------------------------------------------------------- parameters
    def trainable_parameters(self):
        params = [p for i in self.config.trainable_layers for p in self.encoder.encoder.layer[i].parameters()]
        return params, list(self.head.parameters()) + list(self.marker.parameters())

    def set_train(self, training: bool) -> None:
        for i in self.config.trainable_layers:
            self.encoder.encoder.layer[i].train(training)
            for p in self.encoder.encoder.layer[i].parameters():
                p.requires_grad = training
        self.head.train(training)
        for p in list(self.head.parameters()) + list(self.marker.parameters()):
            p.requires_grad = training

    def state_dict(self) -> dict:
        state = {}
        for i in self.config.trainable_layers:
            for key, value in self.encoder.encoder.layer[i].state_dict().items():
                state[f"layers.{i}.{key}"] = value.detach().cpu().contiguous()
        for key, value in self.head.state_dict().items():
            state[f"head.{key}"] = value.detach().cpu().contiguous()
        state["marker.weight"] = self.marker.weight.detach().cpu().contiguous()
        return state

    def load_state_dict(self, state: dict) -> None:
        for i in self.config.trainable_layers:
            prefix = f"layers.{i}."
            part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            self.encoder.encoder.layer[i].load_state_dict(part)
        self.head.load_state_dict({k[len("head."):]: v for k, v in state.items() if k.startswith("head.")})
        self.marker.load_state_dict({"weight": state["marker.weight"]})

    # -------------------------------------------------------------- forward
    def tokenize(self, claims, sources):
        return self.tokenizer(list(claims), list(sources), padding=True, truncation="longest_first",
                              max_length=self.config.max_length, return_tensors="pt")

    def _mask(self, hidden, attention_mask):
        # the public mask builder BertModel itself calls (its private wrapper changed signature within transformers 5.x)
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(config=self.encoder.config, inputs_embeds=hidden, attention_mask=attention_mask)

    @staticmethod
    def novelty_flags(input_ids, token_type_ids, attention_mask):
        """1 for each claim word piece (segment 0, not [CLS]/[SEP]) that does not occur in the source (segment 1)."""
        import torch

        flags = torch.zeros_like(input_ids)
        for row in range(input_ids.shape[0]):
            keep = attention_mask[row].bool()
            ids, types = input_ids[row][keep], token_type_ids[row][keep]
            source_ids = set(ids[types == 1].tolist())
            claim_positions = (types == 0).nonzero().flatten().tolist()[1:-1]  # drop [CLS] and the first [SEP]
            for pos in claim_positions:
                if int(ids[pos]) not in source_ids:
                    flags[row, pos] = 1
        return flags

    def lower(self, input_ids, attention_mask, token_type_ids):
        """Hidden states entering the first trainable layer (frozen part; no gradient)."""
        import torch

        with torch.no_grad():
            hidden = self.encoder.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
            mask = self._mask(hidden, attention_mask)
            for layer in self.encoder.encoder.layer[: self.first_trainable]:
                hidden = layer(hidden, attention_mask=mask)
        return hidden

    def upper(self, hidden, attention_mask, flags):
        """Logit of 'consistent' from the hidden states entering the first trainable layer and the novelty flags."""
        import torch

        hidden = hidden + self.marker(flags)
        mask = self._mask(hidden, attention_mask)
        for layer in self.encoder.encoder.layer[self.first_trainable :]:
            hidden = layer(hidden, attention_mask=mask)
        features = torch.cat([hidden[:, 0], mean_pool(hidden, attention_mask)], dim=-1)
        return self.head(features).squeeze(-1)

    def logits(self, claims, sources):
        batch = self.tokenize(claims, sources).to(self.device)
        hidden = self.lower(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        flags = self.novelty_flags(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
        return self.upper(hidden, batch["attention_mask"], flags)

    # -------------------------------------------------------------- files
    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        save_file(self.state_dict(), str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
        self.config.save(folder)

    @classmethod
    def load(cls, folder: Path, device: str = "cpu") -> "ConsistencyNet":
        from safetensors.torch import load_file

        config = ConsistencyConfig.load(folder)
        weights = folder / WEIGHTS_FILE
        if not weights.is_file():
            raise HybridError(f"consistency classifier at {folder} has no {WEIGHTS_FILE}")
        net = cls(config, device)
        net.load_state_dict(load_file(str(weights), device=device))
        net.set_train(False)
        return net
