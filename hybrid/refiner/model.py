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

The Refiner's other jobs live beside it: hybrid.refiner.io (config, create, load, save), hybrid.refiner.head (the
replaced-token detector), hybrid.refiner.cache (what the passes of one request reuse), hybrid.refiner.masks.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from hybrid.errors import HybridError
from hybrid.refiner.logprobs import token_logprob
from hybrid.models import cache_keyword, last_position_logits
from hybrid.refiner.cache import CanvasCacheMixin, PromptState, read_positions
from hybrid.refiner.head import DetectionHeadMixin
from hybrid.refiner.io import CheckpointMixin, RefinerConfig
from hybrid.refiner.output_head import OutputHeadMixin
from hybrid.refiner.masks import attention_mask


@dataclass
class RefinerOutput:
    """One training pass: slot i's logits, and what the detection head made of the visible tokens when asked."""

    logits: torch.Tensor  # (B, L, V)
    keep_logits: torch.Tensor | None = None  # (B, L) high where the visible token is likely the original (detect)
    head_features: torch.Tensor | None = None  # (B, L, D) the head's raw inputs (detect or head_features)


class Refiner(CheckpointMixin, DetectionHeadMixin, CanvasCacheMixin, OutputHeadMixin, nn.Module):
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
        self._layer_cache_keyword = cache_keyword(self.model.get_base_model().model.layers[0])

    def check_renoised_input(self) -> None:
        """A re-noised slot can show the draft token only where a marker tells the top layers it is a guess."""
        if self.config.renoised_input not in ("mask", "draft") or (self.config.renoised_input == "draft" and self.mask_marker is None):
            raise HybridError(f"renoised_input must be mask, or draft with bidirectional_layers > 0; got {self.config.renoised_input!r}")

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

    def encode_prompt(self, prompt_ids: torch.Tensor, prompt_attention_mask: torch.Tensor, drafted=None) -> PromptState:
        """The prompt's cache and last logits. With `drafted` (hybrid.drafting.layer_states.LayerStates of a draft of this prompt) and
        lower layers that are the drafter's, their states over the prompt and the draft come from drafting: only the
        top layers run over the prompt (`prompt_from_lower`), and the passes that follow start from the draft's lower
        states (`adopt_lower`)."""
        from transformers import DynamicCache

        drafted = drafted if self.reuses_lower else None
        if drafted is not None and drafted.prompt_hidden is not None:
            state = self.prompt_from_lower(prompt_attention_mask, drafted)
        else:
            cache = DynamicCache(config=self.model.config)
            positions = (prompt_attention_mask.cumsum(-1) - 1).clamp(min=0)
            last = last_position_logits(self.model, cache, inputs_embeds=self._embed(prompt_ids), attention_mask=prompt_attention_mask,
                                        position_ids=positions)
            state = PromptState(cache, prompt_attention_mask, positions[:, -1:] + 1, last)
        if drafted is not None:
            self.adopt_lower(state, drafted)
        return state

    def canvas_logits(self, state: PromptState, canvas: torch.Tensor, need: torch.Tensor | None = None,
                      packed: bool = False, listed: tuple | None = None) -> torch.Tensor:
        """Logits (B, L, V) for every canvas slot given the cached prompt and the whole canvas.

        With `need` (B, L), the output head runs only on the slots marked there (other rows are zeros): the head is
        a 49k x 576 matmul per slot, a fifth of a step's work on the default model. With `packed` too, only those
        rows come back, (n, V) in row-major order (``canvas_logits(...)[need]`` without the (B, L, V) tensor). With
        `listed` (ids (n, k), whole (n,)) too: as `listed_logits`.
        """
        reuse = (need is not None and self.cache_refresh > 1 and state.canvas_keys is not None
                 and state.canvas_keys[0].shape[2] == canvas.shape[1] and state.passes_since_refresh < self.cache_refresh)
        if reuse:
            return self._partial_canvas_logits(state, canvas, need, packed, listed)
        length = canvas.shape[1]
        prompt_len = state.attention_mask.shape[1]
        if self.reuses_lower:
            hidden = self._reusing_lower(state, canvas, rows=None if need is None else read_positions(need))
            state.canvas_keys = state.canvas_values = None
            return self._head(state, hidden[:, :-1], torch.arange(1, length, device=canvas.device), need, length, packed, listed)
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
        return self._head(state, hidden[:, :-1], torch.arange(1, length, device=canvas.device), need, length, packed, listed)

    def needed_logits(self, state: PromptState, canvas: torch.Tensor, need: torch.Tensor) -> torch.Tensor:
        """(n, V): the logits of the `need` slots in row-major order, as ``canvas_logits(state, canvas, need)[need]``
        (the sampler's optional fast path: no (B, L, V) tensor is filled and gathered again)."""
        return self.canvas_logits(state, canvas, need, packed=True)

    def listed_logits(self, state: PromptState, canvas: torch.Tensor, need: torch.Tensor, ids: torch.Tensor,
                      rule) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The sampler's shortlist path (hybrid.refining.shortlist): for the `need` slots in row-major order, the logits of each
        row's listed tokens `ids` (n, k) (ids < 0 read token 0), the whole vocabulary's (m, V) at the rows that
        `rule(listed logits)` marks (or a given (n,) mask marks), and that mark. The output head multiplies n x k rows of
        its weight, and all of it only for those m rows."""
        return self.canvas_logits(state, canvas, need, packed=True, listed=(ids, rule))

    def _backbone(self, state: PromptState, canvas: torch.Tensor, positions: torch.Tensor, key_positions: torch.Tensor,
                  taps: dict | None = None) -> torch.Tensor:
        """Hidden states of `canvas[:, positions]`, attending to the cached prompt and to the canvas entries at
        `key_positions` (the cached ones the cache already holds, then `positions` themselves, in that order).
        `taps` as in `_layers`."""
        both_ways, causal = self._masks(state.attention_mask, positions, key_positions)
        ids = canvas[:, positions]
        shown = state.shown[:, positions] if state.shown is not None else None
        return self._layers(self._embed(ids, shown), ids == self.mask_token_id, state.next_position + positions, both_ways, causal,
                            state.cache, taps)

    def _masks(self, prompt: torch.Tensor, queries: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(the top layers' both-ways mask, the lower layers' causal one or None where every layer sees both ways)."""
        causal = attention_mask(prompt, queries, keys, both_ways=False) if self.first_bidirectional > 0 else None
        return attention_mask(prompt, queries, keys, both_ways=True), causal

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

    def visible_confidence(self, state: PromptState, canvas: torch.Tensor) -> torch.Tensor:
        """(B, L): how likely each token on the canvas is right. The detection head's probability where the refiner
        has one, else the refiner's probability of the token."""
        length = canvas.shape[1]
        every = torch.arange(length, device=canvas.device)
        taps = {}
        if self.reuses_lower:  # the refine passes that follow reuse these lower states (the draft is their prefix)
            hidden = self._reusing_lower(state, canvas, taps)
        else:
            hidden = self._backbone(state, canvas, every, every, taps)
            state.cache.crop(-length)
        state.canvas_keys = state.canvas_values = None
        logprobs = self._canvas_token_logprobs(state, hidden[:, :-1], canvas)
        if self.detection_head is None:
            return logprobs.exp()
        return torch.sigmoid(self.detection_head(self._detection_features(hidden, taps, logprobs)))

    def _canvas_token_logprobs(self, state: PromptState, hidden: torch.Tensor, canvas: torch.Tensor, chunk: int = 128) -> torch.Tensor:
        """(B, L): the refiner's log-prob of each canvas token, hidden[:, i - 1] predicting slot i and the prompt slot 0.
        The head runs over `chunk` rows at a time, so no (B, L, V) tensor is made."""
        rows, tokens = hidden.reshape(-1, hidden.shape[-1]), canvas[:, 1:].reshape(-1)
        lm_head = self.model.get_base_model().lm_head
        flat = torch.empty(len(tokens), device=canvas.device)
        for i in range(0, len(tokens), chunk):
            flat[i : i + chunk] = token_logprob(lm_head(rows[i : i + chunk]), tokens[i : i + chunk])
        return torch.cat([token_logprob(state.last_logits, canvas[:, 0])[:, None], flat.view(canvas.shape[0], -1)], dim=1)

    def forward(self, prompt_ids: torch.Tensor, prompt_attention_mask: torch.Tensor, canvas: torch.Tensor,
                shown: torch.Tensor | None = None, detect: bool = False, head_features: bool = False) -> RefinerOutput:
        """One pass over prompt and canvas together (training): the same logits as encode_prompt + canvas_logits.

        `shown` (B, L): the tokens under the masks for renoised_input "draft" refiners. With a detection head, `detect`
        also runs it (keep-logits and the features it read) and `head_features` only gathers its features (fitting the
        head on frozen features). Training calls this and nothing else, since a wrapped model (DDP's) only exposes it."""
        prompt_len = prompt_ids.shape[1]
        every = torch.arange(-prompt_len, canvas.shape[1], device=canvas.device)  # the prompt's positions are negative
        slots = every[prompt_len:]
        both_ways, causal = self._masks(prompt_attention_mask, every, slots)
        prompt_positions = (prompt_attention_mask.cumsum(-1) - 1).clamp(min=0)
        positions = torch.cat([prompt_positions, prompt_positions[:, -1:] + 1 + slots], dim=1)
        ids = torch.cat([prompt_ids, canvas], dim=1)
        if shown is not None:
            shown = torch.cat([torch.full_like(prompt_ids, -1), shown], dim=1)
        taps = {} if (detect or head_features) and self.detection_head is not None else None
        hidden = self._layers(self._embed(ids, shown), ids == self.mask_token_id, positions, both_ways, causal, taps=taps)
        # The AR shift: the prompt's last position predicts slot 0, canvas position i - 1 predicts slot i.
        logits = self.model.get_base_model().lm_head(hidden[:, prompt_len - 1 : -1]).float()
        if taps is None:
            return RefinerOutput(logits)
        # The head reads each canvas position's own states (they have seen the token) and the token's log-prob.
        canvas_taps = {index: tapped[:, prompt_len:] for index, tapped in taps.items()}
        features = self._detection_features(hidden[:, prompt_len:], canvas_taps, token_logprob(logits, canvas))
        return RefinerOutput(logits, self.detection_head(features) if detect else None, features)
