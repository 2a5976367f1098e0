"""Train the FactCC-style consistency classifier on CPU (`hybrid consistency train`; defaults: the shipped one).

Steps: build synthetic (claim, source) pairs from training documents; run the frozen lower MiniLM layers once
and keep their outputs; fine-tune the top layers and the head for a time budget; score held-out corruptions;
save the fine-tuned layers + head (safetensors), config.json and metrics.json.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from hybrid.consistency.classifier import ConsistencyClassifier
from hybrid.consistency.documents import training_documents
from hybrid.consistency.evaluation import ConsistencyEvaluation, evaluate_predictions, held_out_pairs
from hybrid.consistency.model import METRICS_FILE, ConsistencyConfig, ConsistencyNet
from hybrid.consistency.options import TrainingOptions
from hybrid.consistency.pairs import build_pairs

logger = logging.getLogger(__name__)


@dataclass
class TrainingResult:
    output: Path
    evaluation: ConsistencyEvaluation  # on held-out corruptions, at the chosen threshold
    metrics: dict  # what metrics.json holds


def cache_lower(net: ConsistencyNet, pairs, batch_size: int = 64):
    """Per pair: frozen-layer outputs (bf16, unpadded) and the claim tokens' novelty flags."""
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i].claim) + len(pairs[i].source))
    items = [None] * len(pairs)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        enc = net.tokenize([pairs[i].claim for i in batch], [pairs[i].source for i in batch])
        hidden = net.lower(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
        flags = net.novelty_flags(enc["input_ids"], enc["token_type_ids"], enc["attention_mask"])
        lengths = enc["attention_mask"].sum(dim=1).tolist()
        for row, index in enumerate(batch):
            items[index] = (hidden[row, : lengths[row]].to(torch.bfloat16).clone(), flags[row, : lengths[row]].clone())
    return items


def make_batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar length (sorted within chunks of 50 batches) to limit padding."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def pad(items: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    longest = max(h.shape[0] for h, _ in items)
    out = torch.zeros(len(items), longest, items[0][0].shape[1])
    mask = torch.zeros(len(items), longest, dtype=torch.long)
    flags = torch.zeros(len(items), longest, dtype=torch.long)
    for i, (h, f) in enumerate(items):
        out[i, : h.shape[0]] = h.float()
        mask[i, : h.shape[0]] = 1
        flags[i, : h.shape[0]] = f
    return out, mask, flags


def train(net: ConsistencyNet, cached, labels, options: TrainingOptions) -> dict:
    rng = random.Random(options.seed)
    torch.manual_seed(options.seed)
    layer_params, head_params = net.trainable_parameters()
    optimizer = torch.optim.AdamW(
        [{"params": layer_params, "lr": options.lr_layers}, {"params": head_params, "lr": options.lr_head}],
        weight_decay=0.01,
    )
    lengths = [h.shape[0] for h, _ in cached]
    per_epoch = make_batches(lengths, options.batch_size, rng)
    wanted = max(1, round(options.epochs * len(per_epoch)))
    epochs_batches = list(per_epoch)
    while len(epochs_batches) < wanted:
        epochs_batches.extend(make_batches(lengths, options.batch_size, rng))
    epochs_batches = epochs_batches[:wanted]
    total = len(epochs_batches)
    warmup = max(1, total // 20)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    budget = options.minutes * 60
    loss_fn = torch.nn.BCEWithLogitsLoss()
    net.set_train(True)
    for i in net.config.trainable_layers:  # dropout off in the encoder layers: faster, and one pass needs none
        net.encoder.encoder.layer[i].eval()
    deadline = time.monotonic() + options.minutes * 60
    started = time.monotonic()
    running, seen, steps = [], 0, 0
    for step, batch in enumerate(epochs_batches):
        if time.monotonic() > deadline:
            logger.info("time budget reached after %d of %d steps", step, total)
            break
        # Warm up, then decay linearly to zero by the last step or by the time budget, whichever comes first.
        progress = max(step / total, (time.monotonic() - started) / budget)
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base * min((step + 1) / warmup, max(0.0, 1.0 - progress))
        hidden, mask, flags = pad([cached[i] for i in batch])
        target = torch.tensor([float(labels[i]) for i in batch])
        loss = loss_fn(net.upper(hidden, mask, flags), target)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(layer_params + head_params, 1.0)
        optimizer.step()
        running.append(loss.item())
        seen += len(batch)
        steps += 1
        if steps % 25 == 0:
            logger.info("step %d/%d  loss %.4f  %.0f s", steps, total, sum(running[-25:]) / 25, time.monotonic() - started)
    net.set_train(False)
    return {"steps": steps, "planned_steps": total, "pairs_seen": seen, "train_seconds": round(time.monotonic() - started, 1),
            "final_loss": round(sum(running[-50:]) / max(1, len(running[-50:])), 4)}


def choose_threshold(net: ConsistencyNet, cached, labels) -> tuple[float, float]:
    """Threshold maximising balanced accuracy on the calibration pairs (from training documents), and that figure."""
    probs = []
    with torch.no_grad():
        for start in range(0, len(cached), 64):
            hidden, mask, flags = pad(cached[start : start + 64])
            probs.extend(torch.sigmoid(net.upper(hidden, mask, flags)).tolist())
    best = (0.5, 0.0)
    for step in range(5, 96):
        threshold = step / 100
        pos = [p >= threshold for p, y in zip(probs, labels) if y == 1]
        neg = [p < threshold for p, y in zip(probs, labels) if y == 0]
        balanced = (sum(pos) / max(1, len(pos)) + sum(neg) / max(1, len(neg))) / 2
        if balanced > best[1] + 1e-9:
            best = (threshold, balanced)
    return best


def train_classifier(options: TrainingOptions) -> TrainingResult:
    """Train, calibrate, save to ``options.output`` and score the saved classifier on held-out pairs."""
    torch.manual_seed(options.seed)
    t0 = time.monotonic()
    rng = random.Random(options.seed)
    pairs = build_pairs(training_documents(), rng, max_sentences=options.sentences,
                        origin_weights={"plain": options.plain_weight}, in_window_share=options.in_window_share)
    logger.info("training pairs: %d %s", len(pairs), dict(Counter(p.kind for p in pairs)))
    config = ConsistencyConfig()
    net = ConsistencyNet(config)
    cached = cache_lower(net, pairs)
    cache_seconds = time.monotonic() - t0
    logger.info("cached frozen-layer outputs in %.0f s", cache_seconds)
    n_calibration = int(len(pairs) * options.calibration_share)
    train_cached, calibration_cached = cached[n_calibration:], cached[:n_calibration]
    labels = [p.label for p in pairs]
    stats = train(net, train_cached, labels[n_calibration:], options)
    if n_calibration:
        config.threshold, calibration_balanced = choose_threshold(net, calibration_cached, labels[:n_calibration])
        stats["calibration"] = {"pairs": n_calibration, "threshold": config.threshold,
                                "balanced_accuracy": round(calibration_balanced, 4)}
        logger.info("threshold %.2f (balanced accuracy %.3f on %d calibration pairs)",
                    config.threshold, calibration_balanced, n_calibration)
    del cached, train_cached, calibration_cached

    evaluation_pairs = held_out_pairs(per_kind=options.held_out_per_kind)
    t1 = time.monotonic()
    options.output.mkdir(parents=True, exist_ok=True)
    net.save(options.output)
    classifier = ConsistencyClassifier(options.output)
    probs = classifier.score_pairs([p.claim for p in evaluation_pairs], [p.source for p in evaluation_pairs])
    evaluation = evaluate_predictions(probs, evaluation_pairs, config.threshold)
    logger.info("held-out balanced accuracy %.3f (AUC %.3f) on %d pairs in %.0f s",
                evaluation.balanced_accuracy, evaluation.roc_auc, evaluation.pairs, time.monotonic() - t1)
    for kind, figures in evaluation.per_kind.items():
        logger.info("  %-13s acc %.3f  balanced %s  n=%d", kind, figures.accuracy,
                    "-" if figures.balanced_accuracy is None else f"{figures.balanced_accuracy:.3f}", figures.pairs)
    for kind, figures in evaluation.no_novel_word_accuracy.items():
        logger.info("  %-13s without novel words: acc %.3f  n=%d", kind, figures.accuracy, figures.pairs)
    metrics = {
        "held_out": evaluation.to_dict(),
        "held_out_source": "ACLSum validation papers + held-out plain-English passages (never trained on)",
        "training": {**stats, "pairs": len(pairs), "pair_kinds": dict(Counter(p.kind for p in pairs)),
                     "cache_seconds": round(cache_seconds, 1), "args": options.recorded()},
        "config": asdict(config),
        "total_seconds": round(time.monotonic() - t0, 1),
    }
    (options.output / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    logger.info("saved to %s in %.0f s total", options.output, time.monotonic() - t0)
    return TrainingResult(options.output, evaluation, metrics)
