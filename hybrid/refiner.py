"""The diffusion refiner: a pretrained causal LM turned into a masked denoiser over a canvas.

The backbone keeps its weights (shared with the drafter: the refiner adds LoRA layers in place, and drafting
runs with them switched off, so one copy of the base weights serves both). What changes is the attention
pattern: the prompt attends causally, as in pretraining, and every canvas position attends to the prompt and
to the whole canvas. Prediction keeps the AR head's one-position shift (the hidden state at position i-1
predicts token i), which lets training start from the AR model's behaviour (the DiffuLLaMA / Dream recipe).

The mask token is one id past the base vocabulary. Its embedding is a single learned vector stored beside the
LoRA weights, instead of a resized embedding matrix, so a checkpoint stays a few MB and the base model's
tensors are never copied.

`bidirectional_layers = N` (N > 0) opens the canvas both ways in the top N layers only: the lower layers stay
causal and carry no LoRA, so they compute exactly what the drafter computes over the same tokens, and only the top
N layers (with LoRA) learn to use the right-hand context. The refiner then starts close to the drafter instead of
from a backbone confused by attention it never saw in pretraining, and training backpropagates through N layers
instead of all of them. A masked slot enters the lower layers as the mask embedding (fixed there, since no gradient
reaches it) and is marked for the top layers by a learned vector added to its hidden state.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from hybrid.atomic import atomic_folder
from hybrid.detection_head import DetectionHead, split_head_tensors
from hybrid.errors import HybridError
from hybrid.models import cache_keyword
from hybrid.refiner_location import resolve_refiner
from hybrid.sampler import token_logprob

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
    detection_head: bool = False  # a trained replaced-token detector scores visible tokens (hybrid.detection_head)
    detection_layers: list[int] = field(default_factory=list)  # decoder layers whose outputs it reads ([]: the final state)
    detection_neighbours: int = 0  # it also reads this many positions on each side
    # Proposals come from log p_drafter + residual_weight x log p_refiner (hybrid.sampler): the weight the refiner was
    # trained through, or (for refiners trained before the product objective) the best untrained weight measured.
    residual_weight: float = 1.0
    # What a re-noised slot shows the lower layers: "mask" (the mask embedding) or "draft" (the draft's token there,
    # marked for the top layers by mask_marker; needs bidirectional_layers > 0). The slack always shows the mask.
    renoised_input: str = "mask"
    training: dict = field(default_factory=dict)  # the recipe settings it was trained with, for the record


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


@dataclass
class PromptState:
    """The prompt encoded once per request: its key/value cache, mask, positions and the logits of its last position."""

    cache: object
    attention_mask: torch.Tensor  # (B, P)
    next_position: torch.Tensor  # (B, 1): position id of canvas slot 0
    last_logits: torch.Tensor  # (B, V): predicts canvas slot 0 (the AR shift)
    shown: torch.Tensor | None = None  # (B, L) with renoised_input "draft": the draft token under each mask (-1: none)
    canvas_keys: list | None = None  # per layer (B, H, L, D): the canvas keys of the last pass (approximate reuse)
    canvas_values: list | None = None
    passes_since_refresh: int = 0
    lower: "LowerStates | None" = None  # exact reuse of the causal lower layers between passes (Refiner.reuse_lower)
    last_drafter_logits: torch.Tensor | None = None  # (B, V) the plain drafter's prediction of slot 0 (drafter_logprobs)


@dataclass
class LowerStates:
    """What the causal, LoRA-free lower layers computed for a canvas: a slot's lower states depend only on the prompt
    and on what the slots up to it showed, so a pass recomputes them only from the first slot that shows another
    token than before (exact, not an approximation)."""

    inputs: torch.Tensor  # (B, L) what each slot showed the lower layers: a token id, or the mask id
    keys: list  # per lower layer (B, H, L, D)
    values: list
    hidden: torch.Tensor  # (B, L, E) the lower stack's output, before the mask marker
    recomputed: int = 0  # canvas positions the last pass ran through the lower layers


class Refiner(nn.Module):
    """A masked-diffusion denoiser over a canvas that follows a prompt. Implements the sampler's Denoiser protocol."""

    def __init__(self, base_model, config: RefinerConfig):
        super().__init__()
        from peft import LoraConfig, get_peft_model

        self.config = config
        vocab = base_model.get_input_embeddings().weight.shape[0]
        self.mask_token_id = int(vocab)
        layers = int(base_model.config.num_hidden_layers)
        if not 0 <= config.bidirectional_layers <= layers:
            raise HybridError(f"bidirectional_layers must be between 0 (all) and {layers} for this model, got {config.bidirectional_layers}")
        # Index of the first layer that sees the canvas both ways (and carries LoRA).
        self.first_bidirectional = layers - config.bidirectional_layers if config.bidirectional_layers else 0
        partial = self.first_bidirectional > 0
        lora = LoraConfig(
            r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
            target_modules=config.target_modules, bias="none",
            layers_to_transform=list(range(self.first_bidirectional, layers)) if partial else None,
            layers_pattern="layers" if partial else None,
        )
        with warnings.catch_warnings():  # peft calls a transformers API that warns about its own deprecation
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            self.model = get_peft_model(base_model, lora)
        embed = base_model.get_input_embeddings().weight.detach().float()
        self.mask_embedding = nn.Parameter(embed.mean(dim=0).to(embed.device), requires_grad=not partial)
        self.mask_marker = nn.Parameter(torch.zeros_like(self.mask_embedding)) if partial else None
        self.check_renoised_input()
        self.residual_weight = float(config.residual_weight)
        self.detection_head = None
        if config.detection_head:
            self.add_detection_head(config.detection_layers, config.detection_neighbours)
        # 0: every step recomputes the whole canvas (exact). N > 0: after a full pass, the next N - 1 steps
        # recompute only the positions whose outputs are needed and reuse the other canvas keys/values from earlier
        # passes (the approximate dual cache of Fast-dLLM); a full pass every N steps bounds the staleness.
        self.cache_refresh = 0
        # With causal lower layers (bidirectional_layers > 0), keep their states between passes and recompute them
        # only from the first slot whose input changed (exact; see LowerStates). False recomputes every layer.
        self.reuse_lower = True
        self._model_cache_keyword = cache_keyword(self.model)
        self._layer_cache_keyword = cache_keyword(self.model.get_base_model().model.layers[0])

    def check_renoised_input(self) -> None:
        """A re-noised slot can show the draft token only where a marker tells the top layers it is a guess."""
        if self.config.renoised_input not in ("mask", "draft") or (self.config.renoised_input == "draft" and self.mask_marker is None):
            raise HybridError(f"renoised_input must be mask, or draft with bidirectional_layers > 0; got {self.config.renoised_input!r}")

    def add_detection_head(self, layers: list[int] = (), neighbours: int = 0) -> None:
        """Attach a fresh replaced-token detector reading the outputs of decoder `layers` (negative: counted from the
        top; none: the final normed state) at each position and `neighbours` positions on each side. It starts out
        ranking tokens by their probability."""
        count = len(self.model.get_base_model().model.layers)
        resolved = self._resolve_layers(layers)
        if any(not 0 <= index < count for index in resolved) or neighbours < 0:
            raise HybridError(f"detection head layers {list(layers)} must lie in [-{count}, {count - 1}] for this {count}-layer "
                              f"model, and its neighbours ({neighbours}) must be 0 or more")
        self.config.detection_head = True
        self.config.detection_layers, self.config.detection_neighbours = resolved, neighbours
        head = DetectionHead(self.mask_embedding.shape[0], max(len(resolved), 1), neighbours)
        self.detection_head = head.to(self.mask_embedding.device)

    def has_detection_head(self, layers: list[int], neighbours: int) -> bool:
        """Whether the refiner carries a detection head of exactly this layout (layers as `add_detection_head` takes them)."""
        return (self.detection_head is not None and self.config.detection_layers == self._resolve_layers(layers)
                and self.config.detection_neighbours == neighbours)

    def _resolve_layers(self, layers) -> list[int]:
        """Layer indices sorted and without repeats, negative ones counted from the top."""
        count = len(self.model.get_base_model().model.layers)
        return sorted({index + count if index < 0 else index for index in layers})

    # ---- construction and persistence -------------------------------------------------------------------------

    @classmethod
    def create(cls, base_model, base_name: str, lora_r: int = 16, lora_alpha: int = 32, lora_dropout: float = 0.0,
               training: dict | None = None, bidirectional_layers: int = 0):
        config = RefinerConfig(base_name, fingerprint(base_model), lora_r, lora_alpha, lora_dropout,
                               bidirectional_layers=bidirectional_layers, training=training or {})
        return cls(base_model, config)

    @classmethod
    def from_pretrained(cls, name: str, base_model) -> "Refiner":
        """A refiner by shipped name, folder or hub id (hybrid.refiner_location), loaded onto `base_model`."""
        folder = resolve_refiner(name)
        if folder is None:
            raise HybridError("no shipped refiner is installed: pass a folder or a hub id")
        return cls.load(folder, base_model)

    @classmethod
    def load(cls, path: str | os.PathLike, base_model) -> "Refiner":
        """Load a saved refiner onto `base_model`, refusing a backbone it was not trained for."""
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
        refiner = cls(base_model, config)
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

    # ---- the two views of the backbone --------------------------------------------------------------------------

    def adapter_disabled(self):
        """Context in which the shared backbone runs as the plain drafter (LoRA layers bypassed)."""
        return self.model.disable_adapter()

    def _embed(self, ids: torch.Tensor, shown: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings, the mask embedding at masks, or where `shown` (B, L) holds a token (>= 0), that token's."""
        table = self.model.get_input_embeddings()
        is_mask = ids == self.mask_token_id
        if shown is not None:
            ids = torch.where(is_mask & (shown >= 0), shown, ids)
            is_mask = ids == self.mask_token_id
        embeds = table(ids.masked_fill(is_mask, 0))
        return torch.where(is_mask[..., None], self.mask_embedding.to(embeds.dtype), embeds)

    # ---- Denoiser protocol --------------------------------------------------------------------------------------

    def encode_prompt(self, prompt_ids: torch.Tensor, prompt_attention_mask: torch.Tensor) -> PromptState:
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        positions = (prompt_attention_mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            inputs_embeds=self._embed(prompt_ids), attention_mask=prompt_attention_mask, position_ids=positions,
            use_cache=True, logits_to_keep=1, **{self._model_cache_keyword: cache},
        )
        return PromptState(cache, prompt_attention_mask, positions[:, -1:] + 1, out.logits[:, -1].float())

    def canvas_logits(self, state: PromptState, canvas: torch.Tensor, need: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, L, V) for every canvas slot given the cached prompt and the whole canvas.

        With `need` (B, L), the output head runs only on the slots marked there (other rows are zeros): the head is
        a 49k x 576 matmul per slot, a fifth of a step's work on the default model.
        """
        reuse = (need is not None and self.cache_refresh > 1 and state.canvas_keys is not None
                 and state.canvas_keys[0].shape[2] == canvas.shape[1] and state.passes_since_refresh < self.cache_refresh)
        if reuse:
            return self._partial_canvas_logits(state, canvas, need)
        batch, length = canvas.shape
        prompt_len = state.attention_mask.shape[1]
        if self.reuse_lower and self.first_bidirectional > 0 and self.cache_refresh <= 1:
            hidden = self._reusing_lower(state, canvas)
            state.canvas_keys = state.canvas_values = None
            return self._head(state, hidden[:, :-1], torch.arange(1, length, device=canvas.device), need, length)
        every = torch.arange(length, device=canvas.device)
        hidden = self._backbone(state, canvas, every, every)
        layers = state.cache.layers
        if need is not None and self.cache_refresh > 1:
            state.canvas_keys = [layer.keys[:, :, prompt_len:].clone() for layer in layers]
            state.canvas_values = [layer.values[:, :, prompt_len:].clone() for layer in layers]
            state.passes_since_refresh = 1
        else:
            state.canvas_keys = state.canvas_values = None
        state.cache.crop(-length)  # drop the canvas again: the cache keeps only the prompt
        # The AR shift: slot 0 is predicted by the prompt's last position, slot i by canvas position i - 1.
        return self._head(state, hidden[:, :-1], torch.arange(1, length, device=canvas.device), need, length)

    def _backbone(self, state: PromptState, canvas: torch.Tensor, positions: torch.Tensor, key_positions: torch.Tensor,
                  taps: dict | None = None) -> torch.Tensor:
        """Hidden states of `canvas[:, positions]`, attending to the cached prompt and to the canvas entries at
        `key_positions` (the cached ones the cache already holds, then `positions` themselves, in that order).
        `taps` as in `_layers`."""
        prompt = state.attention_mask.bool()
        both_ways = _both_ways_mask(prompt, len(positions), len(key_positions))
        causal = _causal_mask(prompt, positions, key_positions) if self.first_bidirectional > 0 else None
        ids = canvas[:, positions]
        shown = state.shown[:, positions] if state.shown is not None else None
        return self._layers(self._embed(ids, shown), ids == self.mask_token_id, state.next_position + positions, both_ways, causal,
                            state.cache, taps)

    def _reusing_lower(self, state: PromptState, canvas: torch.Tensor) -> torch.Tensor:
        """`_backbone` over the whole canvas, with the lower layers rerun only from the first slot whose input changed
        since the last pass (state.lower); the top layers always see the whole canvas. Same result, to float rounding."""
        length = canvas.shape[1]
        hidden = self._lower_states(state, canvas).hidden
        is_mask = canvas == self.mask_token_id
        if self.mask_marker is not None:
            hidden = hidden + is_mask[..., None].to(hidden.dtype) * self.mask_marker.to(hidden.dtype)
        return self._top_layers(state.cache, hidden, state.next_position, _both_ways_mask(state.attention_mask.bool(), length, length))

    def drafter_logprobs(self, state: PromptState, drafter_cache, canvas: torch.Tensor) -> torch.Tensor:
        """(B, L, V) the plain drafter's log-distribution of each canvas token given the prompt and the tokens before it
        (what hybrid.verify.DrafterScorer computes), sharing the lower layers with the refiner's passes: they are
        rerun only from the first slot that changed since the last pass, and only the top layers run again, causal
        and without LoRA, on the drafter's own prompt cache `drafter_cache` (the draft's)."""
        hidden = self._lower_states(state, canvas).hidden
        every = torch.arange(canvas.shape[1], device=canvas.device)
        causal = _causal_mask(state.attention_mask.bool(), every, every)
        with self.adapter_disabled():
            hidden = self._top_layers(drafter_cache, hidden, state.next_position, causal)
            logits = self.model.get_base_model().lm_head(hidden[:, :-1]).float()
        return torch.cat([state.last_drafter_logits[:, None], logits], dim=1).log_softmax(-1)

    def _lower_states(self, state: PromptState, canvas: torch.Tensor) -> LowerStates:
        """state.lower brought up to `canvas`: the lower layers rerun from the first slot whose input changed."""
        length = canvas.shape[1]
        device = canvas.device
        prompt_len = state.attention_mask.shape[1]
        inner = self.model.get_base_model().model
        is_mask = canvas == self.mask_token_id
        inputs = canvas if state.shown is None else torch.where(is_mask & (state.shown >= 0), state.shown, canvas)
        lower = state.lower if state.lower is not None and state.lower.inputs.shape == inputs.shape else None
        start = 0
        if lower is not None:
            changed = (lower.inputs != inputs).any(0).nonzero().flatten()
            start = int(changed[0]) if changed.numel() else length
        if start == length:
            lower.recomputed = 0
            return lower
        positions = state.next_position + torch.arange(length, device=device)
        causal = _causal_mask(state.attention_mask.bool(), torch.arange(start, length, device=device), torch.arange(length, device=device))
        suffix = self._embed(inputs[:, start:])
        rotary = inner.rotary_emb(suffix, position_ids=positions[:, start:])
        keys, values = [], []
        for index in range(self.first_bidirectional):
            cached = state.cache.layers[index]
            if start > 0:
                cached.keys = torch.cat([cached.keys, lower.keys[index][:, :, :start]], dim=2)
                cached.values = torch.cat([cached.values, lower.values[index][:, :, :start]], dim=2)
            suffix = inner.layers[index](suffix, attention_mask=causal, position_embeddings=rotary, position_ids=positions[:, start:],
                                         use_cache=True, **{self._layer_cache_keyword: state.cache})
            keys.append(cached.keys[:, :, prompt_len:])
            values.append(cached.values[:, :, prompt_len:])
            cached.keys, cached.values = cached.keys[:, :, :prompt_len], cached.values[:, :, :prompt_len]
        hidden = suffix if start == 0 else torch.cat([lower.hidden[:, :start], suffix], dim=1)
        state.lower = LowerStates(inputs.clone(), keys, values, hidden, length - start)
        return state.lower

    def _top_layers(self, cache, hidden: torch.Tensor, next_position: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The layers from first_bidirectional up over the whole canvas under `mask`, on the prompt held in `cache`
        (the canvas entries are dropped from it again afterwards)."""
        inner = self.model.get_base_model().model
        positions = next_position + torch.arange(hidden.shape[1], device=hidden.device)
        rotary = inner.rotary_emb(hidden, position_ids=positions)
        for index in range(self.first_bidirectional, inner.config.num_hidden_layers):
            prompt_len = cache.layers[index].keys.shape[2]
            hidden = inner.layers[index](hidden, attention_mask=mask, position_embeddings=rotary, position_ids=positions,
                                         use_cache=True, **{self._layer_cache_keyword: cache})
            cached = cache.layers[index]
            cached.keys, cached.values = cached.keys[:, :, :prompt_len], cached.values[:, :, :prompt_len]
        return inner.norm(hidden)

    def _layers(self, embeds: torch.Tensor, is_mask: torch.Tensor, position_ids: torch.Tensor, both_ways: torch.Tensor,
                causal: torch.Tensor | None, cache=None, taps: dict | None = None) -> torch.Tensor:
        """The decoder stack with the lower layers under `causal` and the top ones under `both_ways` (4D boolean masks).
        With `taps` (a dict), the outputs of the layers the detection head reads are stored there by layer index."""
        inner = self.model.get_base_model().model
        hidden = embeds
        rotary = inner.rotary_emb(hidden, position_ids=position_ids)
        for index, layer in enumerate(inner.layers[: inner.config.num_hidden_layers]):
            if index == self.first_bidirectional and self.mask_marker is not None:
                hidden = hidden + is_mask[..., None].to(hidden.dtype) * self.mask_marker.to(hidden.dtype)
            mask = both_ways if index >= self.first_bidirectional else causal
            hidden = layer(hidden, attention_mask=mask, position_embeddings=rotary, position_ids=position_ids,
                           use_cache=cache is not None, **{self._layer_cache_keyword: cache})
            if taps is not None and index in self.config.detection_layers:
                taps[index] = hidden
        return inner.norm(hidden)

    def _detection_features(self, hidden: torch.Tensor, taps: dict, logits: torch.Tensor, canvas: torch.Tensor) -> torch.Tensor:
        """The detection head's raw features (B, L, D) from one pass: `hidden` and `taps` hold canvas positions only."""
        layers = self.config.detection_layers
        states = [taps[index] for index in layers] if layers else [hidden]
        return self.detection_head.features(states, token_logprob(logits, canvas))

    def _head(self, state: PromptState, hidden: torch.Tensor, slots: torch.Tensor, need: torch.Tensor | None, length: int) -> torch.Tensor:
        """Scatter output-head logits for `slots` (hidden[:, j] predicts slot slots[j]) into a (B, L, V) tensor."""
        lm_head = self.model.get_base_model().lm_head
        logits = torch.zeros(hidden.shape[0], length, state.last_logits.shape[-1], device=hidden.device)
        logits[:, 0] = state.last_logits
        rows = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device) if need is None else need[:, slots]
        if rows.any():
            target = logits[:, slots]
            target[rows] = lm_head(hidden[rows]).float()
            logits[:, slots] = target
        return logits

    def _partial_canvas_logits(self, state: PromptState, canvas: torch.Tensor, need: torch.Tensor) -> torch.Tensor:
        """Recompute only the positions whose outputs are needed; the rest of the canvas comes from earlier passes."""
        length = canvas.shape[1]
        prompt_len = state.attention_mask.shape[1]
        positions = need[:, 1:].any(0).nonzero().flatten()  # slot i is predicted at canvas position i - 1
        if positions.numel() == 0:  # only slot 0 is needed: the prompt already predicted it
            return self._head(state, state.last_logits[:, None, :0], positions + 1, need, length)
        kept = torch.ones(length, dtype=torch.bool, device=canvas.device)
        kept[positions] = False
        layers = state.cache.layers
        for layer, keys, values in zip(layers, state.canvas_keys, state.canvas_values):
            layer.keys = torch.cat([layer.keys, keys[:, :, kept]], dim=2)
            layer.values = torch.cat([layer.values, values[:, :, kept]], dim=2)
        hidden = self._backbone(state, canvas, positions, torch.cat([kept.nonzero().flatten(), positions]))
        for layer, keys, values in zip(layers, state.canvas_keys, state.canvas_values):
            keys[:, :, positions] = layer.keys[:, :, -len(positions):]  # the recomputed entries are fresh: keep them
            values[:, :, positions] = layer.values[:, :, -len(positions):]
            layer.keys, layer.values = layer.keys[:, :, :prompt_len], layer.values[:, :, :prompt_len]
        state.passes_since_refresh += 1
        return self._head(state, hidden, positions + 1, need, length)

    def visible_confidence(self, state: PromptState, canvas: torch.Tensor) -> torch.Tensor:
        """(B, L): how likely each token on the canvas is right. The detection head's probability where the refiner
        has one, else the refiner's probability of the token."""
        length = canvas.shape[1]
        every = torch.arange(length, device=canvas.device)
        taps = {}
        hidden = self._backbone(state, canvas, every, every, taps)
        state.cache.crop(-length)
        state.canvas_keys = state.canvas_values = None
        logits = self._head(state, hidden[:, :-1], torch.arange(1, length, device=canvas.device), None, length)
        if self.detection_head is None:
            return token_logprob(logits, canvas).exp()
        return torch.sigmoid(self.detection_head(self._detection_features(hidden, taps, logits, canvas)))

    def forward(self, prompt_ids: torch.Tensor, prompt_attention_mask: torch.Tensor, canvas: torch.Tensor, detect: bool = False,
                shown: torch.Tensor | None = None):
        """One pass over prompt and canvas together (training): the same logits as encode_prompt + canvas_logits.

        With `detect`, (logits, keep-logits or None) as `forward_with_detection` (a wrapped model, such as DDP's,
        only exposes `forward`). `shown` (B, L): the tokens under the masks for renoised_input "draft" refiners."""
        logits, keep = self.forward_with_detection(prompt_ids, prompt_attention_mask, canvas, detect=detect, shown=shown)
        return (logits, keep) if detect else logits

    def forward_with_detection(self, prompt_ids: torch.Tensor, prompt_attention_mask: torch.Tensor, canvas: torch.Tensor,
                               detect: bool = True, shown: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits (B, L, V), keep-logits (B, L) of the detection head or None) from one pass (training)."""
        logits, features = self.pass_with_detection_features(prompt_ids, prompt_attention_mask, canvas, detect, shown)
        return logits, None if features is None else self.detection_head(features)

    def pass_with_detection_features(self, prompt_ids: torch.Tensor, prompt_attention_mask: torch.Tensor, canvas: torch.Tensor,
                                     detect: bool = True, shown: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits (B, L, V), the detection head's raw features (B, L, D) or None) from one pass over prompt and canvas."""
        batch, prompt_len = prompt_ids.shape
        length = canvas.shape[1]
        total = prompt_len + length
        keys = torch.cat([prompt_attention_mask.bool(), torch.ones(batch, length, dtype=torch.bool, device=canvas.device)], dim=1)
        causal = torch.ones(total, total, dtype=torch.bool, device=canvas.device).tril()
        strictly_causal = (causal[None] & keys[:, None, :])[:, None] if self.first_bidirectional > 0 else None
        causal[prompt_len:, :] = True  # canvas rows see everything
        both_ways = (causal[None] & keys[:, None, :])[:, None]
        prompt_positions = (prompt_attention_mask.cumsum(-1) - 1).clamp(min=0)
        positions = torch.cat([prompt_positions, prompt_positions[:, -1:] + 1 + torch.arange(length, device=canvas.device)], dim=1)
        ids = torch.cat([prompt_ids, canvas], dim=1)
        if shown is not None:
            shown = torch.cat([torch.full_like(prompt_ids, -1), shown], dim=1)
        taps = {} if detect and self.detection_head is not None else None
        hidden = self._layers(self._embed(ids, shown), ids == self.mask_token_id, positions, both_ways, strictly_causal, taps=taps)
        # The AR shift: the prompt's last position predicts slot 0, canvas position i - 1 predicts slot i.
        logits = self.model.get_base_model().lm_head(hidden[:, prompt_len - 1 : -1]).float()
        if taps is None:
            return logits, None
        # The head reads each canvas position's own states (they have seen the token) and the token's log-prob.
        canvas_taps = {index: tapped[:, prompt_len:] for index, tapped in taps.items()}
        return logits, self._detection_features(hidden[:, prompt_len:], canvas_taps, logits, canvas)


def _both_ways_mask(prompt: torch.Tensor, queries: int, keys: int) -> torch.Tensor:
    """(B, 1, queries, P + keys) bool: every canvas query sees the prompt (where `prompt`, (B, P), is set) and every
    canvas key."""
    canvas = torch.ones(prompt.shape[0], keys, dtype=torch.bool, device=prompt.device)
    return torch.cat([prompt, canvas], dim=1)[:, None, None, :].expand(prompt.shape[0], 1, queries, -1)


def _causal_mask(prompt: torch.Tensor, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """(B, 1, Q, P + K) bool: a canvas query at position `queries[i]` sees the prompt and the canvas keys at positions
    `keys[j] <= queries[i]`."""
    batch = prompt.shape[0]
    earlier = (keys[None, :] <= queries[:, None])[None].expand(batch, -1, -1)
    return torch.cat([prompt[:, None, :].expand(-1, len(queries), -1), earlier], dim=2)[:, None]


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
