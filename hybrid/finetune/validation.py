"""The validation figures a refiner is judged by, on held-out examples.

- masked accuracy at 50% masking, beside the drafter's own teacher-forced next-token accuracy on the same positions
  (the refiner sees both sides, so it must do clearly better); the same at 15% masking, about what one refine pass
  re-noises (drawn from a generator of its own, so the other figures stay comparable with earlier runs);
- error detection: with 10% of visible tokens replaced by drafter-sampled substitutes, the ROC AUC of the refiner's
  doubt (1 - its detection head's keep-probability where it has one, 1 - p_refiner(visible token) otherwise)
  separating replaced from original tokens; the token-probability AUC is reported beside it either way. The same
  again with 10% of visible tokens replaced by tokens drawn uniformly from the vocabulary (blatant errors, which a
  detector trained only on plausible substitutes can miss; own generator, so the other figures stay comparable);
- repair: the share of those replaced tokens that one hybrid refine pass (K = 8, positions chosen by refiner
  confidence) restores exactly, and the share of original tokens it breaks;
- the proposal distribution (log p_drafter + w log p_refiner, w the refiner's residual_weight) at 15% and 30% masking,
  beside the drafter and the refiner alone on the same positions (own generators);
- with a tokenizer: real drafts (hybrid.finetune.real_drafts): greedy drafts of the held-out prompts refined with the
  pipeline's defaults (verified), and how often a kept edit moves a draft toward its reference and how often away.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from hybrid.evaluation.metrics.auc import roc_auc
from hybrid.refining.canvas import build_canvas, score_draft
from hybrid.config import SamplerConfig
from hybrid.finetune.objective import collate, drafter_logits, drafter_substitutes, random_substitutes, shown_tokens
from hybrid.refiner.logprobs import token_logprob
from hybrid.refining.sampler import refine


@dataclass
class ValidationFigures:
    examples: int
    masked_accuracy: float
    drafter_accuracy_same_positions: float
    masked_accuracy_15: float  # at 15% masking
    drafter_accuracy_15: float  # the drafter on those positions
    detection_auc: float  # the refiner's own confidence (detection head if it has one)
    detection_auc_token_probability: float  # 1 - p_refiner(visible token), with or without a head
    detection_auc_random: float  # the refiner's own confidence, against uniformly random substitutes
    detection_auc_random_token_probability: float  # 1 - p_refiner(visible token) against them
    repair_restored: float
    repair_broken: float
    substituted_tokens: int
    combined_accuracy_15: float = float("nan")  # the proposal distribution at 15% masking
    refiner_accuracy_15: float = float("nan")  # the refiner alone on the same positions (drawn apart from masked_accuracy_15)
    drafter_accuracy_15_combined_positions: float = float("nan")
    combined_accuracy_30: float = float("nan")
    refiner_accuracy_30: float = float("nan")
    drafter_accuracy_30: float = float("nan")
    combined_positions: int = 0  # masked positions per rate
    residual_weight: float = float("nan")
    real_drafts: dict | None = None  # RealDraftFigures of the default hybrid on greedy drafts of the held-out prompts

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def validate_refiner(refiner, examples, pad_id: int, end_id: int, batch_size: int = 8, seed: int = 1234,
                     repair_steps: int = 8, repair_strength: float = 0.2, tokenizer=None) -> ValidationFigures:
    was_training = refiner.training
    refiner.eval()
    generator = torch.Generator().manual_seed(seed)
    light_generator = torch.Generator().manual_seed(seed + 1)
    mask_id = refiner.mask_token_id
    hits = drafter_hits = masked_total = 0
    light_hits = light_drafter_hits = light_total = 0
    random_generator = torch.Generator().manual_seed(seed + 2)
    scores, probability_scores, labels = [], [], []
    random_scores, random_probability_scores, random_labels = [], [], []
    restored = broken = substituted_total = original_total = 0
    product_generators, product = _product_counters(seed)
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size], pad_id, end_id, slack=0)
        device = refiner.mask_embedding.device
        batch.prompt_ids, batch.prompt_mask = batch.prompt_ids.to(device), batch.prompt_mask.to(device)
        batch.target_ids, batch.valid = batch.target_ids.to(device), batch.valid.to(device)
        # (a) masked accuracy against the drafter on the same positions
        ar = drafter_logits(refiner, batch)  # one drafter pass serves (a), the substitutes of (b) and the shown tokens
        masked = _draw_positions(batch.valid, 0.5, generator)
        logits = _fill(refiner, batch, ar, masked)
        hits += int(((logits.argmax(-1) == batch.target_ids) & masked).sum())
        masked_total += int(masked.sum())
        drafter_hits += int(((ar.argmax(-1) == batch.target_ids) & masked).sum())
        light = _draw_positions(batch.valid, 0.15, light_generator)
        light_logits = _fill(refiner, batch, ar, light)
        light_hits += int(((light_logits.argmax(-1) == batch.target_ids) & light).sum())
        light_drafter_hits += int(((ar.argmax(-1) == batch.target_ids) & light).sum())
        light_total += int(light.sum())
        _count_product_hits(refiner, batch, ar, product_generators, product)
        # (b) error detection on visible substitutions
        substitutes = drafter_substitutes(ar, batch, 20, generator)
        replaced = _draw_positions(batch.valid, 0.1, generator)
        corrupted = torch.where(replaced, substitutes, batch.target_ids)
        detected = refiner(batch.prompt_ids, batch.prompt_mask, corrupted, detect=True)
        _doubts(detected.logits, detected.keep_logits, corrupted, replaced, batch.valid, scores, probability_scores, labels)
        # (b') the same with uniformly random substitutes
        blatant = random_substitutes(batch, batch.target_ids, mask_id, 1.0, random_generator)
        replaced_blatant = _draw_positions(batch.valid, 0.1, random_generator)
        corrupted_blatant = torch.where(replaced_blatant, blatant, batch.target_ids)
        blatant_detected = refiner(batch.prompt_ids, batch.prompt_mask, corrupted_blatant, detect=True)
        _doubts(blatant_detected.logits, blatant_detected.keep_logits, corrupted_blatant, replaced_blatant, batch.valid, random_scores,
                random_probability_scores, random_labels)
        # (c) one hybrid refine pass over the corrupted text
        lengths = batch.valid.sum(1).tolist()
        state = refiner.encode_prompt(batch.prompt_ids, batch.prompt_mask)
        confidence = score_draft(refiner, state, corrupted)
        config = SamplerConfig(steps=repair_steps, strength=repair_strength, select="confidence", slack=0)
        canvas, _ = build_canvas(corrupted, None, lengths, config, end_id, mask_id, generator, scores=confidence)
        if refiner.config.renoised_input == "draft":
            state.shown = corrupted
        output = refine(refiner, state, canvas, config, editable=batch.valid)
        fixed = output.canvas[:, : corrupted.shape[1]] == batch.target_ids
        restored += int((fixed & replaced).sum())
        broken += int((~fixed & batch.valid & ~replaced).sum())
        substituted_total += int(replaced.sum())
        original_total += int((batch.valid & ~replaced).sum())
    real = None
    if tokenizer is not None:
        real = _real_drafts(refiner, tokenizer, examples)
    refiner.train(was_training)
    share = _shares(product)
    return ValidationFigures(
        examples=len(examples), masked_accuracy=hits / max(masked_total, 1),
        drafter_accuracy_same_positions=drafter_hits / max(masked_total, 1), masked_accuracy_15=light_hits / max(light_total, 1),
        drafter_accuracy_15=light_drafter_hits / max(light_total, 1), detection_auc=roc_auc(scores, labels),
        detection_auc_token_probability=roc_auc(probability_scores, labels),
        detection_auc_random=roc_auc(random_scores, random_labels),
        detection_auc_random_token_probability=roc_auc(random_probability_scores, random_labels),
        repair_restored=restored / max(substituted_total, 1), repair_broken=broken / max(original_total, 1),
        substituted_tokens=substituted_total, combined_accuracy_15=share[0.15][0], refiner_accuracy_15=share[0.15][1],
        drafter_accuracy_15_combined_positions=share[0.15][2], combined_accuracy_30=share[0.3][0],
        refiner_accuracy_30=share[0.3][1], drafter_accuracy_30=share[0.3][2], combined_positions=product[(0.15, None)][3],
        residual_weight=refiner.residual_weight, real_drafts=real,
    )


def _real_drafts(refiner, tokenizer, examples, max_new_tokens: int = 48) -> dict:
    """The default hybrid (verified) on greedy drafts of the held-out prompts, against their reference continuations."""
    from hybrid.drafting.drafter import Drafter
    from hybrid.finetune.real_drafts import refine_real_drafts
    from hybrid.pipeline import HybridPipeline

    pipe = HybridPipeline(Drafter(refiner.model.get_base_model(), tokenizer), refiner)
    references = [tokenizer.decode(e.target_ids, skip_special_tokens=True) for e in examples]
    figures, _ = refine_real_drafts(pipe, [e.prompt_ids for e in examples], references, max_new_tokens, seed=0)
    return figures.to_dict()


def _doubts(logits, keep, canvas, replaced, valid, scores: list, probability_scores: list, labels: list) -> None:
    """Append each valid position's doubt (1 - keep-probability of the head, or of the token probability without one),
    its 1 - token probability, and whether it was replaced."""
    probs = token_logprob(logits, canvas).exp()
    probability_scores += (1 - probs)[valid].tolist()
    scores += (1 - (probs if keep is None else torch.sigmoid(keep)))[valid].tolist()
    labels += replaced[valid].long().tolist()


@dataclass
class ProductFigures:
    """Fill accuracy of the proposal distribution and of either expert alone on the same masked positions."""

    rate: float
    positions: int
    combined: float
    refiner: float
    drafter: float
    residual_weight: float
    windows: list = field(default_factory=list)  # the product's accuracy in each example (None: nothing masked), for pairing


@torch.no_grad()
def product_accuracy(refiner, examples, pad_id: int, end_id: int, batch_size: int = 8, seed: int = 1234,
                     weights: tuple[float, ...] | None = None) -> list[ProductFigures]:
    """`ProductFigures` at 15% and 30% masking (the same draws as validate_refiner's for the same examples and seed),
    for the refiner's own residual weight or for each of `weights` (all from the same passes)."""
    weights = tuple(weights) if weights else (refiner.residual_weight,)
    generators, counts = _product_counters(seed, weights)
    device = refiner.mask_embedding.device
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size], pad_id, end_id, slack=0)
        for name in ("prompt_ids", "prompt_mask", "target_ids", "valid"):
            setattr(batch, name, getattr(batch, name).to(device))
        _count_product_hits(refiner, batch, drafter_logits(refiner, batch), generators, counts)
    return [ProductFigures(rate, c[3], *share, weight, c[4]) for (rate, weight), c in counts.items()
            for share in [[hits / max(c[3], 1) for hits in c[:3]]]]


def _product_counters(seed: int, weights: tuple[float, ...] | None = None):
    generators = {rate: torch.Generator().manual_seed(seed + 3 + i) for i, rate in enumerate((0.15, 0.3))}
    # (rate, weight) -> combined, refiner, drafter hits; positions; the combined accuracy per example. weights None: the
    # refiner's own (key None).
    return generators, {(rate, weight): [0, 0, 0, 0, []] for rate in generators for weight in (weights or (None,))}


def _count_product_hits(refiner, batch, ar, generators, counts) -> None:
    drafter_logp = ar.float().log_softmax(-1)
    for rate, generator in generators.items():
        chosen = _draw_positions(batch.valid, rate, generator)
        alone = _fill(refiner, batch, ar, chosen).float().log_softmax(-1)
        for (counted_rate, weight), tally in counts.items():
            if counted_rate != rate:
                continue
            combined = drafter_logp + (refiner.residual_weight if weight is None else weight) * alone
            for slot, logp in enumerate((combined, alone, drafter_logp)):
                hits = (logp.argmax(-1) == batch.target_ids) & chosen
                tally[slot] += int(hits.sum())
                if slot == 0:
                    tally[4] += [h / n if n else None for h, n in zip(hits.sum(1).tolist(), chosen.sum(1).tolist())]
            tally[3] += int(chosen.sum())


def _shares(counts) -> dict:
    """rate -> [combined, refiner, drafter] accuracy, for counters of the refiner's own weight."""
    return {rate: [hits / max(c[3], 1) for hits in c[:3]] for (rate, _), c in counts.items()}


def _fill(refiner, batch, drafter_logits, masked):
    """The refiner's logits with `masked` target positions re-noised (showing what it would see in a draft)."""
    canvas = batch.target_ids.masked_fill(masked, refiner.mask_token_id)
    return refiner(batch.prompt_ids, batch.prompt_mask, canvas, shown=shown_tokens(refiner, drafter_logits, masked)).logits


def _draw_positions(valid: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Each valid position with probability `rate` (drawn on the CPU generator, so figures match across devices)."""
    return (torch.rand(valid.shape, generator=generator) < rate).to(valid.device) & valid
