"""The autoregressive stage: a Drafter wraps any Hugging Face causal LM and writes drafts with a KV cache.

Besides the text it returns each generated token's log-probability under the model (at temperature 1),
which the refiner uses to decide which draft tokens to re-noise, and timings for each phase.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch

from hybrid.config import DraftConfig
from hybrid.errors import HybridError
from hybrid.drafting.decode_loop import DecodeLoop, SpeculationStats
from hybrid.drafting.proposals import proposal_source
from hybrid.drafting.layer_states import LayerStates, recording, trim_latest
from hybrid.models import DEFAULT_DRAFTER, cache_keyword, load_causal_lm

log = logging.getLogger(__name__)

@dataclass
class DraftTimings:
    prefill_s: float = 0.0
    decode_s: float = 0.0
    new_tokens: int = 0  # generated tokens summed over the batch, up to each row's end

    @property
    def total_s(self) -> float:
        return self.prefill_s + self.decode_s

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.total_s if self.total_s > 0 else 0.0


@dataclass
class Draft:
    """A batch of drafts. Prompts are left-padded; generated ids are right-padded with the pad id."""

    prompt_ids: torch.Tensor  # (B, P)
    prompt_attention_mask: torch.Tensor  # (B, P)
    token_ids: torch.Tensor  # (B, N)
    logprobs: torch.Tensor  # (B, N), 0 after a row's end
    lengths: list[int]  # generated tokens per row, the end token excluded
    texts: list[str]
    timings: DraftTimings = field(default_factory=DraftTimings)
    distributions: torch.Tensor | None = None  # (B, N, V) log-probs of every step, with DraftConfig.keep_distributions
    cache: object = None  # the drafter's KV cache of prompt and draft (with keep_distributions): the verifier reuses its prompt part
    lower: LayerStates | None = None  # what the lower layers computed for the draft's tokens (Drafter.generate's `record`)
    speculation: SpeculationStats | None = None  # passes, proposals and acceptance of speculative drafting


def format_prompt(tokenizer, prompt: str, use_chat_template: bool) -> str:
    """The prompt as the model sees it: a user turn of the chat template when asked for and the model has one."""
    if not (use_chat_template and tokenizer.chat_template is not None):
        return prompt
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)


def encode_prompt(tokenizer, prompt: str, use_chat_template: bool) -> list[int]:
    """Token ids of a formatted prompt; the chat template already holds the special tokens it needs."""
    templated = use_chat_template and tokenizer.chat_template is not None
    return tokenizer(format_prompt(tokenizer, prompt, use_chat_template), add_special_tokens=not templated)["input_ids"]


class Drafter:
    """Batched autoregressive drafting with any causal LM."""

    def __init__(self, model, tokenizer, use_chat_template: bool = True, load_s: float = 0.0):
        self.model = model
        self.tokenizer = tokenizer
        self.cache_keyword = cache_keyword(model)
        self.use_chat_template = use_chat_template and tokenizer.chat_template is not None
        self.load_s = load_s
        self.block_drafter = None  # hybrid.drafting.block_drafter.BlockDrafter, for speculate "diffusion" and "both"
        self.token_store = None  # hybrid.drafting.token_store.TokenStore: drafted text that lookup speculation also reads

    @classmethod
    def from_pretrained(cls, name: str = DEFAULT_DRAFTER, dtype: str = "float32", use_chat_template: bool = True,
                        pack_weights: bool = True, lookup_store: str | None = "auto") -> "Drafter":
        """`lookup_store`: "auto", "none" or a folder (use_lookup_store)."""
        start = time.perf_counter()
        model, tokenizer = load_causal_lm(name, dtype)
        drafter = cls(model, tokenizer, use_chat_template).use_lookup_store(lookup_store)
        if pack_weights:
            drafter.pack_weights()
        drafter.load_s = time.perf_counter() - start
        return drafter

    def use_lookup_store(self, name: str | None = "auto") -> "Drafter":
        """Read a lookup store in lookup speculation (hybrid.drafting.token_store): "auto" the shipped store of drafted
        text when it fits this tokenizer, "none" no store, or a folder, which must fit. Returns the drafter."""
        from hybrid.drafting.token_store import resolve_token_store

        self.token_store = resolve_token_store(name, self.tokenizer)
        return self

    def pack_weights(self) -> int:
        """Run the model's linear layers, and the block drafter's, on prepacked weights where the CPU and dtype allow
        (hybrid.drafting.packed_weights: faster decode steps and verify passes); returns how many were packed. Load
        the block drafter first: packing covers the layers present."""
        from hybrid.drafting.packed_weights import pack_linears

        return pack_linears(self.model) + (pack_linears(self.block_drafter) if self.block_drafter is not None else 0)

    @property
    def context_length(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    @property
    def end_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        extra = getattr(self.model.generation_config, "eos_token_id", None)
        ids.update(extra if isinstance(extra, list) else [extra])
        return {i for i in ids if i is not None}

    def format_prompt(self, prompt: str) -> str:
        return format_prompt(self.tokenizer, prompt, self.use_chat_template)

    def encode_prompts(self, prompts: list[str], max_new_tokens: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenise and left-pad prompts; refuse empty ones and ones that leave no room to generate."""
        rows = []
        for prompt in prompts:
            if not prompt or not prompt.strip():
                raise HybridError("the prompt is empty: give some text to continue")
            ids = encode_prompt(self.tokenizer, prompt, self.use_chat_template)
            if len(ids) + max_new_tokens > self.context_length:
                raise HybridError(
                    f"the prompt is {len(ids)} tokens and {max_new_tokens} new tokens were asked for, "
                    f"beyond the model's context of {self.context_length}: shorten the prompt or lower --max-new-tokens"
                )
            rows.append(ids)
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
        return ids.to(self.model.device), mask.to(self.model.device)

    @torch.inference_mode()
    def generate(self, prompts: str | list[str], config: DraftConfig | None = None, on_token=None,
                 record: tuple[int, tuple[int, ...]] | None = None, source=None) -> Draft:
        """Draft every prompt. `on_token(tokens)`, when given, is called after each decode step with the step's token of
        every row (LongTensor[B]; rows that already ended hold the pad id), e.g. to stream the draft. `record` (n,
        layers), with keep_distributions: keep the first n layers' keys and values and the outputs of `layers` at the
        draft slots, and over the prompt those keys and values and layer n - 1's output when `layers` holds it (Draft.lower).
        `source`: a proposal source of one's own (hybrid.drafting.proposals.ProposalSource) instead of config.speculate's."""
        config = config or DraftConfig()
        config.validate()
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise HybridError("no prompts given")
        generator = None
        if config.seed is not None:
            generator = torch.Generator(device=self.model.device).manual_seed(config.seed)
        prompt_ids, prompt_mask = self.encode_prompts(prompts, config.max_new_tokens)
        return self._decode_loop(prompt_ids, prompt_mask, config, generator, on_token, record if config.keep_distributions else None, source)

    @torch.inference_mode()
    def generate_ids(self, prompts: list[list[int]], config: DraftConfig | None = None, source=None) -> Draft:
        """Draft from prompts already tokenised (and formatted) as the Drafter formats them, e.g. training windows."""
        config = config or DraftConfig()
        config.validate()
        if not prompts or not all(prompts):
            raise HybridError("no prompts given, or an empty one")
        width, pad = max(len(r) for r in prompts), self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + list(r) for r in prompts], dtype=torch.long, device=self.model.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in prompts], dtype=torch.long, device=self.model.device)
        generator = torch.Generator(device=self.model.device).manual_seed(config.seed) if config.seed is not None else None
        return self._decode_loop(ids, mask, config, generator, source=source)

    @torch.inference_mode()
    def teacher_forced(self, prompts: str | list[str], texts: str | list[str], keep_distributions: bool = True) -> Draft:
        """A Draft of given continuations instead of generated ones (one parallel pass): each text's tokens, their
        log-probs under the model and, with `keep_distributions`, every slot's distribution and the KV cache, as
        `generate` gives. Refine it with `pipe(prompts, draft=...)`, e.g. to repair a planted error in a known text."""
        from transformers import DynamicCache

        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        texts = [texts] if isinstance(texts, str) else list(texts)
        if len(prompts) != len(texts) or not prompts:
            raise HybridError(f"got {len(prompts)} prompts and {len(texts)} texts: pass one text per prompt")
        rows = [self.tokenizer(text, add_special_tokens=False).input_ids for text in texts]
        if not all(rows):
            raise HybridError("an empty text cannot be refined: give each prompt some text")
        width = max(len(r) for r in rows) + 1  # room for the end token
        prompt_ids, prompt_mask = self.encode_prompts(prompts, width)
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        token_ids = torch.tensor([r + [eos] + [pad] * (width - len(r) - 1) for r in rows], dtype=torch.long, device=prompt_ids.device)
        start = time.perf_counter()
        cache = DynamicCache(config=self.model.config)
        positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
        ids = torch.cat([prompt_ids, token_ids], dim=1)
        mask = torch.cat([prompt_mask, torch.ones_like(token_ids)], dim=1)
        every = torch.cat([positions, positions[:, -1:] + 1 + torch.arange(width, device=ids.device)], dim=1)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=every, use_cache=True, logits_to_keep=width + 1,
                         **{self.cache_keyword: cache})
        distributions = out.logits[:, :-1].float().log_softmax(-1)  # slot i's distribution comes from the token before it
        logprobs = distributions.gather(-1, token_ids[..., None]).squeeze(-1)
        lengths = [len(r) for r in rows]
        logprobs = logprobs.masked_fill(torch.arange(width, device=ids.device)[None] > torch.tensor(lengths, device=ids.device)[:, None], 0.0)
        timings = DraftTimings(prefill_s=time.perf_counter() - start, new_tokens=sum(lengths))
        return Draft(prompt_ids, prompt_mask, token_ids, logprobs, lengths,
                     [self.tokenizer.decode(r, skip_special_tokens=True) for r in rows], timings,
                     distributions if keep_distributions else None, cache if keep_distributions else None)

    def _decode_loop(self, prompt_ids, prompt_mask, config: DraftConfig, generator, on_token=None, record=None, source=None) -> Draft:
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        with recording(self.model, record[1] if record else ()) as outputs:
            loop = DecodeLoop(self.model, self.cache_keyword, config, self.end_ids, self.tokenizer.pad_token_id, generator,
                              on_token, self._stop_hit(config.stop), source if source is not None else proposal_source(config, prompt_ids.shape[0], self.model, self.block_drafter, self.token_store),
                              lambda drop: trim_latest(outputs, drop))
            decoded = loop.run(prompt_ids, prompt_mask, cache)
        texts = [self._finish_text(decoded.token_ids[row, : decoded.lengths[row]].tolist(), config.stop)
                 for row in range(prompt_ids.shape[0])]
        timings = DraftTimings(prefill_s=decoded.prefill_s, decode_s=decoded.decode_s, new_tokens=sum(decoded.lengths))
        draft = Draft(prompt_ids, prompt_mask, decoded.token_ids, decoded.logprobs, decoded.lengths, texts, timings,
                      decoded.distributions, cache if config.keep_distributions else None, speculation=decoded.stats)
        if record:
            draft.lower = LayerStates.from_drafting(cache, prompt_ids.shape[1], draft.token_ids, outputs, record[0])
        return draft

    def _stop_hit(self, stop: tuple[str, ...]):
        def hit(generated: list[int]) -> bool:
            tail = self.tokenizer.decode(generated[-16:], skip_special_tokens=True)
            return any(s in tail for s in stop)

        return hit

    def _finish_text(self, ids: list[int], stop: tuple[str, ...]) -> str:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        for s in stop:
            if s in text:
                text = text[: text.index(s)]
        return text
