"""The drafter's decode loop, plain or speculative, in one place.

Each pass feeds the drafter its own next token and, when a proposal source is given, the tokens it proposes after
it: [t, d1 .. dk]. The pass's logits at every slot are what plain decoding would have computed there one token at a
time, so the loop keeps proposals for as long as the drafter would have written them itself (hybrid.drafting.choosing),
and takes its next token from the slot after the last one kept. The cache, the recorded layer outputs and everything
the refine stage reads are cropped back to the tokens kept, so that a speculative draft is a plain draft written in
fewer passes. Batches of more than one prompt decode plainly: the rows of a batch share one cache length.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from hybrid.config import DraftConfig
from hybrid.drafting.choosing import accept, choose
from hybrid.drafting.logit_rules import logit_rules
from hybrid.drafting.proposals import Proposal
from hybrid.models import last_position_logits, synchronize


@dataclass
class SpeculationStats:
    """How drafting went: `passes` decode passes (the prefill excluded) wrote `tokens` tokens after the first; of the
    source's `proposed` tokens the drafter kept `accepted`; `offered[i]` and `kept[i]` count block position i."""

    source: str = "off"
    passes: int = 0
    tokens: int = 0
    proposed: int = 0
    accepted: int = 0
    offered: list[int] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)
    log: list[tuple[list[int], int]] = field(default_factory=list)  # per pass that had proposals: (proposed ids, kept)

    @property
    def tokens_per_pass(self) -> float:
        return self.tokens / self.passes if self.passes else 1.0

    def add(self, proposed: list[int], accepted: int) -> None:
        if proposed:
            self.log.append((list(proposed), accepted))
        proposed = len(proposed)
        self.proposed, self.accepted = self.proposed + proposed, self.accepted + accepted
        for position in range(proposed):
            if position == len(self.offered):
                self.offered.append(0)
                self.kept.append(0)
            self.offered[position] += 1
            self.kept[position] += position < accepted

    def to_dict(self, with_log: bool = False) -> dict:
        """Plain data; `with_log`: also each pass's proposals (token ids) and how many the drafter kept."""
        out = {"source": self.source, "passes": self.passes, "tokens": self.tokens, "tokens_per_pass": round(self.tokens_per_pass, 3),
               "proposed": self.proposed, "accepted": self.accepted, "offered_per_position": self.offered,
               "kept_per_position": self.kept}
        return out | ({"proposals": [{"ids": ids, "kept": kept} for ids, kept in self.log]} if with_log else {})


@dataclass
class Decoded:
    token_ids: torch.Tensor  # (B, N)
    logprobs: torch.Tensor  # (B, N)
    lengths: list[int]
    distributions: torch.Tensor | None
    prefill_s: float
    decode_s: float
    stats: SpeculationStats


class DecodeLoop:
    """One call's decoding. `stop_hit(tokens of a row)` says whether a row's text reached a stop string; `trim(n)` drops
    the last n slots of what the recording hooks kept of the latest pass (hybrid.drafting.layer_states.recording)."""

    def __init__(self, model, cache_keyword: str, config: DraftConfig, end_ids: set[int], pad_id: int, generator=None,
                 on_token=None, stop_hit=None, source=None, trim=None):
        self.model, self.cache_keyword, self.config = model, cache_keyword, config
        self.end_ids, self.pad_id, self.generator = end_ids, pad_id, generator
        self.on_token, self.stop_hit, self.source, self.trim = on_token, stop_hit, source, trim
        self.rules = logit_rules(config)

    def run(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, cache) -> Decoded:
        source = self._start(prompt_ids)
        attention = prompt_mask
        positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
        start = time.perf_counter()
        logits = last_position_logits(self.model, cache, input_ids=prompt_ids, attention_mask=attention, position_ids=positions)
        synchronize(prompt_ids.device)  # the prefill ends when the device is done
        prefill_s = time.perf_counter() - start
        next_position, forced = positions[:, -1:] + 1, None
        while True:
            token = forced if forced is not None else choose(self._ruled(logits), self.config, self.generator)
            if self._commit(token, logits):
                break
            proposal = self._propose(source, cache)
            block_logits, attention = self._verify_pass(token, proposal, attention, next_position, cache)
            accepted, forced, done = self._check(proposal, block_logits)
            self.stats.passes += 1
            self.stats.add(proposal.tokens, accepted)
            if source is not None:
                source.update_candidate_strategy(len(proposal.tokens), accepted)
            # kept in the cache: t and the accepted proposals, less the last token when it ended the draft (plain
            # decoding never feeds its last token)
            attention = self._crop(cache, attention, len(proposal.tokens) - accepted + done)
            if done:
                break
            logits = block_logits[:, accepted]
            next_position = next_position + 1 + accepted
        self.stats.tokens = len(self.tokens) - 1
        decode_s = time.perf_counter() - start - prefill_s
        return Decoded(torch.stack(self.tokens, dim=1), torch.stack(self.logprobs, dim=1), self.lengths,
                       torch.stack(self.distributions, dim=1) if self.distributions else None, prefill_s, decode_s, self.stats)

    def _start(self, prompt_ids: torch.Tensor):
        """A fresh call's state; the proposal source it uses (none for a batch of several prompts: they decode plainly)."""
        batch, device = prompt_ids.shape[0], prompt_ids.device
        source = self.source if batch == 1 else None
        self.stats = SpeculationStats(source.name if source is not None else "off")
        self.prompt_ids, self.end = prompt_ids, torch.tensor(sorted(self.end_ids), device=device)
        self.prompt = prompt_ids[0].tolist() if source is not None else []  # what a source reads before the text
        self.finished = torch.zeros(batch, dtype=torch.bool, device=device)
        self.lengths = [self.config.max_new_tokens] * batch
        self.tokens, self.logprobs, self.distributions, self.generated = [], [], [], [[] for _ in range(batch)]
        return source

    def _propose(self, source, cache) -> Proposal:
        """The source's proposals after the chosen token (none without a source). A source that reads the drafter's
        states (`needs_cache`, the block drafter) gets the cache, which holds every slot before the chosen token."""
        if source is None:
            return Proposal([])
        limit = self.config.max_new_tokens - len(self.tokens)
        if getattr(source, "needs_cache", False):
            return source.get_candidates(self._context(), limit, cache=cache)
        return source.get_candidates(self._context(), limit)

    def _verify_pass(self, token: torch.Tensor, proposal: Proposal, attention: torch.Tensor, next_position: torch.Tensor, cache):
        """One drafter pass over [the chosen token, the proposals]: the logits after each, and the attention mask grown."""
        device = token.device
        block = torch.tensor([proposal.tokens], dtype=torch.long, device=device).expand(token.shape[0], -1)
        block = torch.cat([token[:, None], block], dim=1)
        attention = torch.cat([attention, torch.ones_like(block)], dim=-1)
        out = self.model(input_ids=block, attention_mask=attention, position_ids=next_position + torch.arange(block.shape[1], device=device),
                         use_cache=True, **{self.cache_keyword: cache})
        return out.logits.float(), attention

    def _crop(self, cache, attention: torch.Tensor, drop: int) -> torch.Tensor:
        """Forget the last `drop` slots: from the cache, the attention mask and the recorded layer states."""
        if drop:
            cache.crop(-drop)
            attention = attention[:, :-drop]
            if self.trim is not None:
                self.trim(drop)
        return attention

    def _check(self, proposal: Proposal, block_logits: torch.Tensor) -> tuple[int, torch.Tensor | None, bool]:
        """How many proposals the drafter keeps (committing each), the token it wrote instead of the first one it did
        not keep (sampling only), and whether the draft ended on a kept one."""
        for index, token in enumerate(proposal.tokens):
            logits = block_logits[:, index]
            q = proposal.probabilities[index] if proposal.probabilities is not None else None
            kept, instead = accept(self._ruled(logits)[0], token, self.config, self.generator, q)
            if not kept:
                forced = torch.tensor([instead], device=logits.device) if instead is not None else None
                return index, forced, False
            if self._commit(torch.tensor([token], device=logits.device), logits):
                return index + 1, None, True
        return len(proposal.tokens), None, False

    def _ruled(self, logits: torch.Tensor) -> torch.Tensor:
        if self.rules is None:
            return logits
        if self.tokens:
            return self.rules(torch.cat([self.prompt_ids, torch.stack(self.tokens, dim=1)], dim=1), logits)
        return self.rules(self.prompt_ids, logits)

    def _context(self) -> list[int]:
        """Row 0's prompt (a source reads one row, which has no padding) and text so far."""
        return self.prompt + self.generated[0]

    def _commit(self, token: torch.Tensor, logits: torch.Tensor) -> bool:
        """Write `token` (B,) chosen from `logits` (B, V); True when the draft is done."""
        config = self.config
        token = torch.where(self.finished, torch.full_like(token, self.pad_id), token)
        log_distribution = torch.log_softmax(logits, dim=-1)
        if config.keep_distributions:
            self.distributions.append(log_distribution)
        self.tokens.append(token)
        if self.on_token is not None:
            self.on_token(token)
        self.logprobs.append(log_distribution.gather(-1, token[:, None]).squeeze(-1).masked_fill(self.finished, 0.0))
        step = len(self.tokens) - 1
        ended = torch.isin(token, self.end) & ~self.finished if not config.ignore_eos else torch.zeros_like(self.finished)
        for row, value in enumerate(token.tolist()):
            self.generated[row].append(value)
            if config.stop and not self.finished[row] and self.stop_hit(self.generated[row]):
                ended[row] = True
        for row in ended.nonzero().flatten().tolist():
            self.lengths[row] = step + (0 if int(token[row]) in self.end_ids else 1)
        self.finished |= ended
        return bool(self.finished.all()) or len(self.tokens) == config.max_new_tokens
