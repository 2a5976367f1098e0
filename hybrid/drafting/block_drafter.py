"""The block drafter: a block-diffusion proposal head on the drafter's own states (after DFlash, TiDAR).

A block [t0, MASK x (P-1)] (t0: the token the drafter just chose, not yet run through it) goes through copies of the
drafter's top `layers` layers, bidirectionally within the block. Its keys and values at each of those layers sit
beside the drafter's own cached keys and values of the context at the same layer, so the block reads the context
as the drafter's top layers see it, at no cost beyond the block's own P positions. Every slot starts from the
drafter's own states at the position before the block (`reads`: its input to the first copied layer there, the
state that chose t0; or its final normed state there, the feature EAGLE reads; or both), joined with the slot's
embedding (t0's, or the mask's) by a learned map; the drafter's final norm and LM head read
the block out. Output slot j proposes the token at t0's position + j + 1 (the drafter's own one-position shift), so
one pass proposes P tokens, which the drafter then checks in one pass of its own (hybrid.drafting.decode_loop).

    drafter = BlockDrafter.create(model, "smollm2-135m", layers=4, block=8)   # or BlockDrafter.load(folder, model)
    proposals = drafter.proposals()                # a ProposalSource (hybrid.drafting.proposals)

Only the block drafter's own weights are trained and saved (the copied layers, the mask embedding, the input map):
the drafter and its LM head stay frozen and shared.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from hybrid.atomic import atomic_folder
from hybrid.drafting.block_adapters import add_adapters, is_frozen_copy, merge_adapters
from hybrid.drafting.proposals import Proposal
from hybrid.errors import HybridError
from hybrid.drafting.packed_weights import plain_copy

CONFIG_NAME = "block_drafter_config.json"
WEIGHTS_NAME = "block_drafter.safetensors"
SHIPPED_NAME = "block-drafter"  # checkpoints/block-drafter, when the package ships one
SHORT_HEAD = "short_head."  # the shortlist's rows of the drafter's LM head: rebuilt on load, never saved
# The drafter's states a block reads at the position before it: "entering" the first copied layer, its "final" normed
# state (what its LM head reads), or both.
READS = {"entering": ("entering",), "final": ("final",), "both": ("entering", "final")}


def resolve_block_drafter(name: str | None) -> Path | None:
    """A block drafter's folder: a path, or the shipped one's name; None (or the name) for the shipped one, None when
    no block drafter is shipped."""
    from hybrid.resources import shipped

    if name in (None, SHIPPED_NAME):
        folder = shipped(f"checkpoints/{SHIPPED_NAME}")
        if (folder / CONFIG_NAME).is_file():
            return folder
        if name is None:
            return None
        raise HybridError(f"no block drafter is shipped in {folder}: train one with `hybrid finetune recipes/block-drafter.yaml`")
    folder = Path(name).expanduser()
    if not folder.is_dir():
        raise HybridError(f"block drafter folder {folder} does not exist")
    return folder


@dataclass
class BlockDrafterConfig:
    base_model: str  # the drafter it reads (its name as the user gave it)
    layers: int = 2  # top layers copied
    block: int = 8  # tokens proposed per pass
    num_hidden_layers: int = 0  # the drafter's, to refuse another drafter's states
    hidden_size: int = 0
    reads: str = "entering"  # a key of READS
    shortlist: int = 0  # tokens the read-out scores in drafting (the drafter's most frequent outputs); 0: every token
    slot_embeddings: bool = False  # one mask embedding per block slot (each slot knows its offset), not one shared
    t0_layers: int = 0  # the drafter's own lower layers t0 runs through before the block (0: slot 0 reads t0's embedding)
    lora_rank: int = 0  # LoRA on frozen copies (hybrid.drafting.block_adapters); 0: the copies themselves train
    provenance: dict = field(default_factory=dict)  # the recipe and the figures of its training


class BlockDrafter(nn.Module):
    def __init__(self, model, config: BlockDrafterConfig):
        super().__init__()
        inner = model.model
        if config.num_hidden_layers != len(inner.layers) or config.hidden_size != model.config.hidden_size:
            raise HybridError(f"this block drafter was trained for a drafter with {config.num_hidden_layers} layers of width "
                              f"{config.hidden_size}, not {len(inner.layers)} of {model.config.hidden_size}")
        if config.reads not in READS:
            raise HybridError(f"block drafter reads must be one of {', '.join(READS)}, not {config.reads!r}")
        self.config = config
        self.merged = 0  # LoRA layers folded into the copies (BlockDrafter.load)
        self.reads = READS[config.reads]
        self.first = len(inner.layers) - config.layers
        if not 0 <= config.t0_layers <= self.first:
            raise HybridError(f"t0 can run through 0 to {self.first} of the drafter's lower layers, not {config.t0_layers}")
        # plain copies even of a packed drafter's layers: they are trained, or loaded into
        self.layers = nn.ModuleList(plain_copy(inner.layers[i]) for i in range(self.first, len(inner.layers)))
        if config.lora_rank:
            add_adapters(self.layers, config.lora_rank)
        hidden = model.config.hidden_size
        mean = inner.embed_tokens.weight.detach().mean(0)
        self.mask_embedding = nn.Parameter((mean.repeat(config.block - 1, 1) if config.slot_embeddings else mean).clone())
        # [the drafter's states before the block (READS), the slot's embedding]; it starts as their sum, the final
        # state's share at zero when it is read beside the entering one
        self.in_map = nn.Linear((len(self.reads) + 1) * hidden, hidden)
        with torch.no_grad():
            eye = torch.eye(hidden)
            self.in_map.weight.copy_(torch.cat([eye] + [torch.zeros_like(eye)] * (len(self.reads) - 1) + [eye], dim=1))
            self.in_map.bias.zero_()
        object.__setattr__(self, "drafter", model)  # shared and frozen: not a submodule, not saved
        if config.shortlist:  # places for the saved ids; the LM head's rows are built on load (SHORT_HEAD)
            self._shortlist_modules(torch.zeros(config.shortlist, dtype=torch.long))
        # (positions, {read: states}) of the drafter's latest one-row pass
        self.latest = None
        hooks = [inner.layers[self.first].register_forward_pre_hook(self._record, with_kwargs=True)]
        if "final" in self.reads:
            hooks.append(inner.norm.register_forward_hook(self._record_final))
        object.__setattr__(self, "hooks", hooks)

    def _record(self, module, args, kwargs) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        positions = kwargs.get("position_ids")
        self.latest = (positions[0], {"entering": hidden[0]}) if hidden.shape[0] == 1 and positions is not None else None

    def _record_final(self, module, args, output) -> None:
        if self.latest is not None and output.shape[0] == 1 and output.shape[1] == self.latest[0].shape[0]:
            self.latest[1]["final"] = output[0]

    def state_at(self, position: int) -> torch.Tensor | None:
        """The drafter's states this block drafter reads at `position`, joined (len(reads) * H), from its latest pass;
        None when that pass did not reach it."""
        if self.latest is None or not (self.latest[0] == position).any() or any(r not in self.latest[1] for r in self.reads):
            return None
        at = int((self.latest[0] == position).nonzero()[0, 0])
        return torch.cat([self.latest[1][r][at] for r in self.reads], dim=-1)

    @classmethod
    def create(cls, model, base_model: str, layers: int = 2, block: int = 8, reads: str = "entering",
               slot_embeddings: bool = False, t0_layers: int = 0, lora_rank: int = 0) -> "BlockDrafter":
        config = BlockDrafterConfig(base_model, layers, block, len(model.model.layers), model.config.hidden_size, reads,
                                    slot_embeddings=slot_embeddings, t0_layers=t0_layers, lora_rank=lora_rank)
        return cls(model, config).to(dtype=model.dtype, device=model.device)

    @classmethod
    def load(cls, folder: str | Path, model, merge: bool = True) -> "BlockDrafter":
        """The block drafter in `folder` (or the shipped one, by its name) on `model`; with `merge`, LoRA is folded into
        its copies (the cheaper pass; such a block drafter cannot be saved again as adapters)."""
        folder = resolve_block_drafter(str(folder))
        if not (folder / CONFIG_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
            raise HybridError(f"{folder} is not a block drafter: it needs {CONFIG_NAME} and {WEIGHTS_NAME}")
        try:
            config = BlockDrafterConfig(**json.loads((folder / CONFIG_NAME).read_text()))
            weights = load_file(str(folder / WEIGHTS_NAME))
        except (ValueError, TypeError, OSError) as exc:
            raise HybridError(f"cannot read the block drafter in {folder}: {exc}") from exc
        drafter = cls(model, config).to(dtype=model.dtype, device=model.device)  # before the weights: none is rounded on the way
        missing, unexpected = drafter.load_state_dict(weights, strict=False)
        missing = [name for name in missing if not name.startswith(SHORT_HEAD) and not is_frozen_copy(name)]
        if missing or unexpected:
            raise HybridError(f"the block drafter in {folder} does not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")
        if config.shortlist:
            drafter._build_short_head()
        if merge and config.lora_rank:
            drafter.merged = merge_adapters(drafter.layers)
        return drafter.eval()

    def set_shortlist(self, ids: torch.Tensor) -> "BlockDrafter":
        """Score only these tokens in drafting (the read-out over 8 slots costs more than the copied layers); training
        keeps the whole vocabulary. Returns this block drafter (on plain weights for its read-out: pack it again)."""
        self.config.shortlist = len(ids)
        self._shortlist_modules(torch.as_tensor(ids, dtype=torch.long, device=self.mask_embedding.device).clone())
        self._build_short_head()
        return self

    def _shortlist_modules(self, ids: torch.Tensor) -> None:
        self.register_buffer("shortlist_ids", ids)
        self.short_head = nn.Linear(self.mask_embedding.shape[-1], len(ids), bias=False)

    def _build_short_head(self) -> None:
        head = self.drafter.lm_head.weight.detach()
        self.short_head.weight = nn.Parameter(head[self.shortlist_ids].clone(), requires_grad=False)

    def save(self, folder: str | Path, dtype: torch.dtype | None = None) -> None:
        """Weights and config into `folder`, whole or not at all; `dtype` rounds the floating weights (bfloat16: half
        the size; loading casts them to the drafter's dtype)."""
        if self.merged:
            raise HybridError("this block drafter's LoRA is merged into its copies: load it with merge=False to save it")
        weights = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous()
                   for k, v in self.state_dict().items() if not k.startswith(SHORT_HEAD) and not is_frozen_copy(k)}
        with atomic_folder(folder) as tmp:
            save_file(weights, str(tmp / WEIGHTS_NAME))
            (tmp / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2) + "\n")

    def block_inputs(self, tokens: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """(..., P) ids and (..., len(reads) * H) the drafter's states before each block -> (..., P, H): slot 0 embeds t0,
        the others the mask (slot j's own with slot embeddings); each joined with its block's states by the input map.
        With t0_layers, `states` ends with t0's own state after those lower layers ((..., H) more), which slot 0 reads
        in place of t0's embedding."""
        if self.config.t0_layers:
            hidden = self.in_map.out_features
            states, embedded = states[..., :-hidden], states[..., None, -hidden:]
        else:
            embedded = self.drafter.model.embed_tokens(tokens[..., :1])
        masks = self.mask_embedding[: tokens.shape[-1] - 1] if self.config.slot_embeddings else self.mask_embedding
        masks = masks.expand(*tokens.shape[:-1], tokens.shape[-1] - 1, -1).to(embedded.dtype)
        slots = torch.cat([embedded, masks], dim=-2)
        return self.in_map(torch.cat([states[..., None, :].to(slots.dtype).expand(*slots.shape[:-1], -1), slots], dim=-1))

    def forward(self, hidden: torch.Tensor, positions: torch.Tensor, context: list[tuple[torch.Tensor, torch.Tensor]],
                mask: torch.Tensor, shortlisted: bool = False) -> torch.Tensor:
        """Logits (B, Q, V) of Q block slots (with `shortlisted`, of the shortlist's tokens only). `hidden` (B, Q, H) the
        block inputs at `positions` (B, Q); `context[i]` the drafter's cached (keys, values) of layer first + i, each
        (B, kv_heads, T, d) after rotary; `mask` (B, 1, Q, T + Q) True where a slot may attend (the context before its
        block, and its own block)."""
        inner = self.drafter.model
        rotary = inner.rotary_emb(hidden, position_ids=positions)
        for layer, (keys, values) in zip(self.layers, context):
            hidden = self._layer(layer, hidden, rotary, keys, values, mask)
        return (self.short_head if shortlisted else self.drafter.lm_head)(inner.norm(hidden))

    def lifted(self, t0: torch.Tensor, position: torch.Tensor, cache) -> torch.Tensor:
        """(1, 1, H): t0 at `position` run through the drafter's first t0_layers layers, reading its cached keys and values
        of the context there and leaving them as they are: the state t0 enters layer t0_layers with in the drafter."""
        inner = self.drafter.model
        hidden = inner.embed_tokens(t0)
        rotary = inner.rotary_emb(hidden, position_ids=position)
        for i, layer in enumerate(inner.layers[: self.config.t0_layers]):
            hidden = self._layer(layer, hidden, rotary, cache.layers[i].keys, cache.layers[i].values, None)
        return hidden

    @classmethod
    def _layer(cls, layer, hidden: torch.Tensor, rotary, keys: torch.Tensor, values: torch.Tensor, mask) -> torch.Tensor:
        """One decoder layer over `hidden`, its attention reading the given context keys and values beside its own."""
        hidden = hidden + cls._attention(layer, layer.input_layernorm(hidden), rotary, keys, values, mask)
        return hidden + layer.mlp(layer.post_attention_layernorm(hidden))

    @staticmethod
    def _attention(layer, x: torch.Tensor, rotary, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        attention = layer.self_attn
        batch, length, _ = x.shape
        d = attention.head_dim
        q = attention.q_proj(x).view(batch, length, -1, d).transpose(1, 2)
        k = attention.k_proj(x).view(batch, length, -1, d).transpose(1, 2)
        v = attention.v_proj(x).view(batch, length, -1, d).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, *rotary)
        k, v = torch.cat([keys.to(k.dtype), k], dim=2), torch.cat([values.to(v.dtype), v], dim=2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        return attention.o_proj(out.transpose(1, 2).reshape(batch, length, -1))

    def proposals(self, block: int | None = None) -> "BlockProposals":
        """This block drafter as a proposal source, proposing up to `block` tokens a pass."""
        return BlockProposals(self, block)

    @torch.inference_mode()
    def propose(self, cache, t0: int, position: int, count: int, min_probability: float = 0.0) -> list[int]:
        """`count` greedy proposals after t0 at `position`, reading the drafter's cache and its state at `position` - 1
        from its latest pass (one row, no padding); none when that pass did not reach it. With `min_probability`, the
        proposals stop before the first one the block drafter gives less than that."""
        device = self.mask_embedding.device
        state = self.state_at(position - 1)
        if state is None:
            return []
        tokens = torch.tensor([[t0] * self.config.block], device=device)[:, :count]
        positions = torch.arange(position, position + tokens.shape[1], device=device)[None]
        if self.config.t0_layers:
            state = torch.cat([state, self.lifted(tokens[:, :1], positions[:, :1], cache)[0, 0].to(state.dtype)])
        context = [(cache.layers[i].keys, cache.layers[i].values) for i in range(self.first, self.first + len(self.layers))]
        seen = context[0][0].shape[2]
        mask = torch.ones(1, 1, tokens.shape[1], seen + tokens.shape[1], dtype=torch.bool, device=device)
        shortlisted = self.config.shortlist > 0
        logits = self(self.block_inputs(tokens, state[None]), positions, context, mask, shortlisted)[0]
        best, proposed = logits.float().softmax(-1).max(-1)  # with a shortlist, its probability within the shortlist
        if shortlisted:
            proposed = self.shortlist_ids[proposed]
        sure = int((best >= min_probability).cumprod(0).sum()) if min_probability > 0 else len(proposed)
        return proposed[:sure].tolist()


class BlockProposals:
    """The block drafter as a proposal source: one block pass proposes up to `block` tokens (greedy)."""

    name = "diffusion"
    needs_cache = True

    def __init__(self, drafter: BlockDrafter, block: int | None = None, min_probability: float = 0.3):
        self.drafter = drafter
        self.block = min(block or drafter.config.block, drafter.config.block)
        # Every proposal makes the verify pass longer: propose only what the block drafter is sure enough of. 0.3 was
        # chosen on the validation prompts (evals/choose_block_gate.py, docs/RESULTS.md; packed weights, block 4):
        # 0.92x plain drafting's speed against 0.82x proposing every slot (0.5: 0.86x, 0.7: 0.83x).
        self.min_probability = min_probability

    def get_candidates(self, context: list[int], limit: int, cache=None) -> Proposal:
        limit = min(limit, self.block)
        if limit <= 0 or cache is None:
            return Proposal([])
        position = cache.get_seq_length()
        return Proposal(self.drafter.propose(cache, context[-1], position, limit, self.min_probability))

    def update_candidate_strategy(self, proposed: int, accepted: int) -> None:
        pass
