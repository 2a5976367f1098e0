"""Training only the detection head, on a frozen refiner: encode the training windows once, then fit on the features.

When only the head trains (`train.train_lora: false`) the refiner's states never change, so running the backbone
again at every optimizer step, as LoRA training must, would spend nearly all the time recomputing features the head
could reuse. Here `train.steps` batches of `train.batch_size` windows, corrupted as the objective says, are encoded
once; the features of their visible positions are kept, and written in shards every `train.save_every` steps
(atomically, so `--resume` and Ctrl-C lose nothing). The head is then fit over them for `train.head_epochs` epochs
(standardised features, AdamW on minibatches), and the epoch with the best ROC AUC on every tenth step's windows,
held out of the fit, is kept. Encoding is the slow part (one backbone pass per batch); the fit takes seconds to
minutes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from hybrid.atomic import atomic_file
from hybrid.auc import roc_auc
from hybrid.errors import HybridError
from hybrid.finetune.objective import corrupt_batch

log = logging.getLogger(__name__)

FEATURES_FOLDER = "head_features"
ROWS_PER_BATCH = 1024
HELD_OUT_EVERY = 10  # windows of every tenth encoded step are held out of the fit to pick the epoch


@torch.no_grad()
def encode_batch(refiner, batch, generator, objective) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, D) float16, substituted (N,) bool) of one batch's visible positions after corruption."""
    corruption = corrupt_batch(refiner, batch, objective, generator)
    features = refiner(batch.prompt_ids, batch.prompt_mask, corruption.canvas, shown=corruption.shown, head_features=True).head_features
    visible = batch.valid & ~corruption.masked
    return features[visible].half().cpu(), corruption.substituted[visible].cpu()


def save_shard(folder: Path, first_step: int, rows: list[tuple[int, torch.Tensor, torch.Tensor]]) -> None:
    """Write the rows encoded at steps first_step.. as one shard; a partial write never leaves a shard behind."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"features": torch.cat([f for _, f, _ in rows]), "substituted": torch.cat([s for _, _, s in rows]),
               "steps": torch.cat([torch.full((len(s),), step) for step, _, s in rows])}
    target = folder / f"steps-{first_step:07d}.safetensors"
    with atomic_file(target) as tmp:
        save_file(tensors, str(tmp))


def load_shards(folder: Path, before_step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(features, substituted, steps) of every shard, keeping rows encoded before `before_step`; None if none."""
    shards = sorted(folder.glob("steps-*.safetensors")) if folder.is_dir() else []
    if not shards:
        return None
    try:
        loaded = [load_file(str(path)) for path in shards]
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise HybridError(f"detection-head features in {folder} are corrupt ({exc}): delete the folder to encode them again") from exc
    features, substituted, steps = (torch.cat([part[name] for part in loaded]) for name in ("features", "substituted", "steps"))
    keep = steps < before_step
    return features[keep], substituted[keep], steps[keep]


def column_moments(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and standard deviation of float16 rows, summed in float64 chunks (no full float copy)."""
    total = torch.zeros(features.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(features), 8192):
        chunk = features[start : start + 8192].double()
        total += chunk.sum(0)
        squares += (chunk * chunk).sum(0)
    mean = total / len(features)
    return mean.float(), (squares / len(features) - mean * mean).clamp(min=0).sqrt().float()


@torch.no_grad()
def _scores(head, features: torch.Tensor) -> list[float]:
    return torch.cat([head(features[s : s + 8192]) for s in range(0, len(features), 8192)]).tolist()


def fit_head(head, features: torch.Tensor, substituted: torch.Tensor, steps: torch.Tensor, epochs: int,
             learning_rate: float, weight_decay: float, seed: int, show_progress: bool = True) -> tuple[list[dict], dict]:
    """Fit `head` on stored features; keep the epoch with the best held-out AUC. Returns (one record per epoch, the
    record of the epoch kept)."""
    held_out = steps % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
    if not held_out.any() or held_out.all() or substituted[held_out].all() or not substituted[held_out].any():
        held_out = torch.zeros_like(held_out)  # too few steps to hold any out: fit on all, keep the last epoch
    train_x, train_y = features[~held_out], (~substituted[~held_out]).float()  # the head predicts "keep"
    check_x, check_y = features[held_out], substituted[held_out].long()
    head.standardise_by(*column_moments(train_x))
    optimizer = torch.optim.AdamW([p for p in head.parameters() if p.requires_grad], lr=learning_rate, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    best, best_state, records = -1.0, None, []
    with torch.random.fork_rng(devices=[]):  # the head's dropout draws from the global generator: same seed, same fit
        torch.manual_seed(seed)
        for epoch in tqdm(range(1, epochs + 1), desc="fit head", unit="epoch", disable=not show_progress):
            head.train()
            order = torch.randperm(len(train_x), generator=generator)
            total = 0.0
            for start in range(0, len(order), ROWS_PER_BATCH):
                rows = order[start : start + ROWS_PER_BATCH]
                loss = F.binary_cross_entropy_with_logits(head(train_x[rows]), train_y[rows])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(rows)
            head.eval()
            record = {"epoch": epoch, "detection": total / len(train_x)}
            if len(check_x):
                record["held_out_auc"] = roc_auc([-score for score in _scores(head, check_x)], check_y.tolist())
            records.append(record)
            score = record.get("held_out_auc", epoch)  # without a held-out part, the last epoch wins
            if score > best:
                best, best_state = score, {k: v.clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    kept = max(records, key=lambda r: r.get("held_out_auc", r["epoch"]))
    log.info("detection head: kept epoch %d of %d (held-out AUC %s)", kept["epoch"], epochs, kept.get("held_out_auc"))
    return records, kept


def train_head_on_frozen_features(trainer):
    """The trainer's `train` when only the detection head trains: encode (resumable), then fit. Returns a TrainResult."""
    from hybrid.finetune.trainer import TrainingInterrupted, TrainResult

    recipe = trainer.recipe.train
    accelerator = trainer.accelerator
    if accelerator.num_processes > 1:
        raise HybridError("train.train_lora: false fits the detection head in one process: run it without `accelerate launch`")
    refiner = accelerator.unwrap_model(trainer.refiner)
    refiner.eval()
    folder = trainer.output_dir / FEATURES_FOLDER
    start = time.perf_counter()
    pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []

    def flush():
        if pending:
            save_shard(folder, pending[0][0], pending)
            pending.clear()
        trainer._checkpoint()

    bar = tqdm(total=recipe.steps, initial=trainer.step, desc="encode windows", unit="step")
    try:
        while trainer.step < recipe.steps:
            batch, generator = trainer._batch(trainer.step, 0)
            with accelerator.autocast():
                features, substituted = encode_batch(refiner, batch, generator, trainer.recipe.objective)
            pending.append((trainer.step, features, substituted))
            trainer.step += 1
            bar.update()
            trainer._log({"step": trainer.step, "elapsed_s": round(time.perf_counter() - start, 3),
                          "positions": len(substituted), "substituted": int(substituted.sum())})
            if trainer.step % recipe.save_every == 0:
                flush()
            if recipe.max_minutes and time.perf_counter() - start > recipe.max_minutes * 60:
                log.warning("time budget of %.1f min reached at step %d of %d: fitting on the windows encoded so far",
                            recipe.max_minutes, trainer.step, recipe.steps)
                break
    except KeyboardInterrupt:
        bar.close()
        flush()
        raise TrainingInterrupted(f"interrupted: {trainer.step} steps of features saved in {folder}; continue with --resume")
    bar.close()
    flush()
    stored = load_shards(folder, trainer.step)
    if stored is None:
        raise HybridError(f"no detection-head features in {folder}: nothing to fit")
    features, substituted, steps = stored
    if steps.unique().numel() < trainer.step:
        raise HybridError(f"{folder} lacks the features of {trainer.step - steps.unique().numel()} encoded steps (a finished "
                          "head fit removes them): start a new run instead of resuming this one")
    head = refiner.detection_head
    head.float()
    with torch.enable_grad():
        records, kept = fit_head(head, features, substituted, steps, trainer.recipe.train.head_epochs, recipe.learning_rate,
                           recipe.weight_decay, recipe.seed)
    for record in records:
        trainer._log({"step": trainer.step} | record | ({"kept": True} if record is kept else {}))
    trainer._log({"step": trainer.step, "validation": trainer._validate()})
    trainer._checkpoint()
    seconds = time.perf_counter() - start
    return TrainResult(trainer.output_dir, trainer.step, seconds, 0.0, kept["detection"], trainer._last_validation())


def remove_features(output_dir: Path) -> None:
    """Drop the encoded features once the head is written (they are large, and a finished run never resumes)."""
    folder = output_dir / FEATURES_FOLDER
    for path in folder.glob("*.safetensors") if folder.is_dir() else []:
        path.unlink()
    if folder.is_dir():
        folder.rmdir()
