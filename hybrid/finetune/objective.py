"""The refiner's training objective: masked diffusion plus repair of plausible wrong tokens that are visible.

Plain masked-diffusion training (MDLM: mask each token with probability 1 - alpha(t), cross-entropy on the masked
ones) teaches the refiner to fill blanks, not to notice a wrong token it can see: Corrective DLM and GIDD show that
confidence-based re-masking then fails to find the errors. So a share of the still-visible tokens is replaced by
tokens the drafter itself finds likely (sampled from its top-k, the true token excluded), and the loss asks the
refiner to predict the original token there too. A small loss on clean visible tokens keeps the refiner's
probability of a visible token meaningful: high when it is right, low when it was substituted.

Masked positions are averaged with weight 1 rather than the ELBO weight -alpha'(t)/(1 - alpha(t)) (1/t for the
linear schedule), whose spikes at small t make LoRA fine-tuning on a few hundred steps noisy (LLaDA and Dream
report the same trade-off and normalise per token).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hybrid.finetune.recipe import ObjectiveSection
from hybrid.refining.schedule import get_schedule


@dataclass
class Batch:
    prompt_ids: torch.Tensor  # (B, P), left-padded
    prompt_mask: torch.Tensor  # (B, P)
    target_ids: torch.Tensor  # (B, L): target, then end tokens
    valid: torch.Tensor  # (B, L) bool: target plus `slack` end tokens; the rest is padding with no loss
    claims: torch.Tensor | None = None  # (B, L) bool: target tokens of names and numbers the prompt supports


@dataclass
class Corruption:
    canvas: torch.Tensor  # (B, L) what the refiner sees
    masked: torch.Tensor  # (B, L) bool
    substituted: torch.Tensor  # (B, L) bool
    shown: torch.Tensor | None = None  # (B, L) the token shown under each mask (-1: the mask itself), see shown_tokens
    drafter_logits: torch.Tensor | None = None  # (B, L, V) the drafter's teacher-forced logits, when they were needed


def collate(examples, pad_id: int, end_id: int, slack: int) -> Batch:
    prompt_len = max(len(e.prompt_ids) for e in examples)
    target_len = max(len(e.target_ids) for e in examples) + slack
    prompt_ids = torch.tensor([[pad_id] * (prompt_len - len(e.prompt_ids)) + e.prompt_ids for e in examples])
    prompt_mask = torch.tensor([[0] * (prompt_len - len(e.prompt_ids)) + [1] * len(e.prompt_ids) for e in examples])
    target_ids = torch.tensor([e.target_ids + [end_id] * (target_len - len(e.target_ids)) for e in examples])
    valid = torch.tensor([[i < len(e.target_ids) + slack for i in range(target_len)] for e in examples])
    claims = None
    if any(e.claims is not None for e in examples):
        claims = torch.tensor([list(e.claims or []) + [False] * (target_len - len(e.claims or [])) for e in examples])
    return Batch(prompt_ids, prompt_mask, target_ids, valid, claims)


@torch.no_grad()
def drafter_logits(refiner, batch: Batch) -> torch.Tensor:
    """The plain drafter's teacher-forced logits (B, L, V) for every target position (LoRA switched off)."""
    ids = torch.cat([batch.prompt_ids, batch.target_ids], dim=1)
    mask = torch.cat([batch.prompt_mask, torch.ones_like(batch.target_ids)], dim=1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    length = batch.target_ids.shape[1]
    with refiner.adapter_disabled():
        return refiner.model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=length + 1).logits[:, :-1]


@torch.no_grad()
def drafter_substitutes(logits: torch.Tensor, batch: Batch, top_k: int, generator: torch.Generator) -> torch.Tensor:
    """For every target position, a token the drafter finds plausible there that is not the true token (`logits`:
    `drafter_logits(refiner, batch)`)."""
    top = logits.float().topk(top_k, dim=-1)
    weights = top.values.softmax(-1).masked_fill(top.indices == batch.target_ids[..., None], 0.0) + 1e-9
    choice = torch.multinomial(weights.flatten(0, 1).cpu(), 1, generator=generator).view(weights.shape[:2]).to(logits.device)
    return top.indices.gather(-1, choice[..., None]).squeeze(-1)


def corrupt(batch: Batch, substitutes: torch.Tensor, mask_id: int, config: ObjectiveSection, generator: torch.Generator) -> Corruption:
    rows, length = batch.target_ids.shape
    t = config.min_mask_rate + (config.max_mask_rate - config.min_mask_rate) * torch.rand(rows, 1, generator=generator)
    mask_rate = 1 - get_schedule(config.schedule).alpha(t)
    masked = (torch.rand(rows, length, generator=generator) < mask_rate).to(batch.valid.device) & batch.valid
    if batch.claims is not None and config.claim_mask_rate > 0:  # grounded: blank the supported names and numbers
        masked |= (torch.rand(rows, length, generator=generator) < config.claim_mask_rate).to(masked.device) & batch.claims.to(masked.device)
    substituted = (torch.rand(rows, length, generator=generator) < config.substitution_rate).to(batch.valid.device) & batch.valid & ~masked
    canvas = torch.where(substituted, substitutes, batch.target_ids).masked_fill(masked, mask_id)
    return Corruption(canvas, masked, substituted)


def corrupt_batch(refiner, batch: Batch, config: ObjectiveSection, generator: torch.Generator) -> Corruption:
    """The objective's corruption of one batch: drafter substitutes where the recipe asks for them, then masking.
    The drafter's logits are computed once, when substitutes, the product objective or the shown draft tokens need them."""
    substitutes, logits = batch.target_ids, None
    if config.substitution_rate > 0 or config.residual_weight > 0 or refiner.config.renoised_input == "draft":
        logits = drafter_logits(refiner, batch)
    if config.substitution_rate > 0:
        substitutes = drafter_substitutes(logits, batch, config.substitute_top_k, generator)
        if config.random_substitute_share > 0:
            substitutes = random_substitutes(batch, substitutes, refiner.mask_token_id, config.random_substitute_share, generator)
    corruption = corrupt(batch, substitutes, refiner.mask_token_id, config, generator)
    corruption.drafter_logits = logits
    corruption.shown = shown_tokens(refiner, logits, corruption.masked)
    return corruption


def shown_tokens(refiner, logits: torch.Tensor | None, masked: torch.Tensor) -> torch.Tensor | None:
    """What a refiner with `renoised_input: draft` sees under each mask: the drafter's own guess there (its
    teacher-forced argmax, as a greedy draft holds it), marked for the top layers; None for `mask` refiners."""
    if refiner.config.renoised_input != "draft":
        return None
    return torch.where(masked, logits.argmax(-1), torch.full_like(masked, -1, dtype=torch.long))


def random_substitutes(batch: Batch, substitutes: torch.Tensor, vocab: int, share: float, generator: torch.Generator) -> torch.Tensor:
    """Replace `share` of the substitutes by tokens drawn uniformly from the vocabulary (never the true token): the
    blatant errors that drafter samples never are, so that a detector also learns that an improbable token is wrong."""
    shape = batch.target_ids.shape
    pick = (torch.rand(shape, generator=generator) < share).to(substitutes.device)
    uniform = torch.randint(0, vocab - 1, shape, generator=generator).to(substitutes.device)
    uniform = uniform + (uniform >= batch.target_ids).long()  # skip the true token: vocab - 1 choices, all wrong
    return torch.where(pick, uniform, substitutes)


def combine(drafter_logits: torch.Tensor, refiner_logits: torch.Tensor, weight: float) -> torch.Tensor:
    """The proposal distribution's logits: log p_drafter + weight x log p_refiner (the sampler's product)."""
    return drafter_logits.float().log_softmax(-1) + weight * refiner_logits.float().log_softmax(-1)


def loss_terms(logits: torch.Tensor, batch: Batch, corruption: Corruption, clean_weight: float,
               keep_logits: torch.Tensor | None = None, detection_weight: float = 0.0,
               residual_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """Cross-entropy against the clean target, weighted by what happened to each position; with a detection head,
    plus `detection_weight` x the binary cross-entropy of telling substituted visible tokens from original ones.
    With `residual_weight` > 0 the cross-entropy is taken on the product with the drafter (`combine`), so the refiner
    learns only what its view of the whole canvas adds to the drafter's prediction."""
    if residual_weight > 0:
        logits = combine(corruption.drafter_logits, logits, residual_weight)
    token_loss = F.cross_entropy(logits.flatten(0, 1), batch.target_ids.flatten(), reduction="none").view_as(batch.target_ids)
    clean = batch.valid & ~corruption.masked & ~corruption.substituted
    weights = corruption.masked.float() + corruption.substituted.float() + clean_weight * clean.float()
    total = (token_loss * weights).sum() / weights.sum().clamp(min=1.0)

    def mean_over(where, values=token_loss):
        return (values * where).sum() / where.sum().clamp(min=1)

    terms = {"masked": mean_over(corruption.masked), "substituted": mean_over(corruption.substituted), "clean": mean_over(clean)}
    if keep_logits is not None and detection_weight > 0:
        visible = batch.valid & ~corruption.masked
        detection = F.binary_cross_entropy_with_logits(keep_logits, (~corruption.substituted).float(), reduction="none")
        terms["detection"] = mean_over(visible, detection)
        total = total + detection_weight * terms["detection"]
    return {"loss": total} | terms
