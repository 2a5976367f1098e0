"""`train.method: head`: only the detection head trains, on a frozen refiner: encode the training windows once, then
fit the head on the features.

The refiner's states never change here, so running the backbone again at every optimizer step, as LoRA training
must, would spend nearly all the time recomputing features the head could reuse. Instead `train.steps` batches of
`train.batch_size` windows, corrupted as the objective says, are encoded once (`hybrid.finetune.head_features`),
written in shards every `train.save_every` steps. The head is then fit over them for `train.head_epochs` epochs
(standardised features, AdamW on minibatches), and the epoch with the best ROC AUC on every tenth step's windows,
held out of the fit, is kept. Encoding is the slow part (one backbone pass per batch); the fit takes seconds to
minutes.
"""

from __future__ import annotations

import logging
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from hybrid.evaluation.metrics.auc import roc_auc
from hybrid.errors import HybridError
from hybrid.finetune.head_features import FEATURES_FOLDER, column_moments, encode_batch, load_shards, remove_features, save_shard
from hybrid.finetune.run_log import last_validation
from hybrid.finetune.training import Training, TrainingInterrupted, TrainResult
from hybrid.refiner import Refiner

log = logging.getLogger(__name__)

ROWS_PER_BATCH = 1024
HELD_OUT_EVERY = 10  # windows of every tenth encoded step are held out of the fit to pick the epoch


@torch.no_grad()
def _scores(head, features: torch.Tensor) -> list[float]:
    return torch.cat([head(features[s : s + 8192]) for s in range(0, len(features), 8192)]).tolist()


def fit_head(head, features: torch.Tensor, substituted: torch.Tensor, steps: torch.Tensor, epochs: int,
             learning_rate: float, weight_decay: float, seed: int) -> tuple[list[dict], dict]:
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
        for epoch in tqdm(range(1, epochs + 1), desc="fit head", unit="epoch"):
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


class HeadTraining(Training):
    trains_lora = False

    def initial_refiner(self, model, training: dict) -> Refiner:
        """Always a fresh head (the same recipe gives the same head whatever the folder held); only the head trains."""
        refiner = super().initial_refiner(model, training)
        self.add_fresh_head(refiner)
        for name, parameter in refiner.named_parameters():
            parameter.requires_grad_(name.startswith("detection_head."))
        return refiner

    def train(self) -> TrainResult:
        """Encode (resumable), then fit."""
        recipe = self.recipe.train
        if self.accelerator.num_processes > 1:
            raise HybridError("train.method: head fits the detection head in one process: run it without `accelerate launch`")
        refiner = self.accelerator.unwrap_model(self.refiner)
        refiner.eval()
        folder = self.output_dir / FEATURES_FOLDER
        start = time.perf_counter()
        pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []

        def flush():
            if pending:
                save_shard(folder, pending[0][0], pending)
                pending.clear()
            self._checkpoint()

        bar = tqdm(total=recipe.steps, initial=self.step, desc="encode windows", unit="step")
        try:
            while self.step < recipe.steps:
                batch, generator = self._batch(self.step, 0)
                with self.accelerator.autocast():
                    features, substituted = encode_batch(refiner, batch, generator, self.recipe.objective)
                pending.append((self.step, features, substituted))
                self.step += 1
                bar.update()
                self._log({"step": self.step, "elapsed_s": round(time.perf_counter() - start, 3),
                           "positions": len(substituted), "substituted": int(substituted.sum())})
                if self.step % recipe.save_every == 0:
                    flush()
                if recipe.max_minutes and time.perf_counter() - start > recipe.max_minutes * 60:
                    log.warning("time budget of %.1f min reached at step %d of %d: fitting on the windows encoded so far",
                                recipe.max_minutes, self.step, recipe.steps)
                    break
        except KeyboardInterrupt:
            bar.close()
            flush()
            raise TrainingInterrupted(f"interrupted: {self.step} steps of features saved in {folder}; continue with --resume")
        bar.close()
        flush()
        stored = load_shards(folder, self.step)
        if stored is None:
            raise HybridError(f"no detection-head features in {folder}: nothing to fit")
        features, substituted, steps = stored
        if steps.unique().numel() < self.step:
            raise HybridError(f"{folder} lacks the features of {self.step - steps.unique().numel()} encoded steps (a finished "
                              "head fit removes them): start a new run instead of resuming this one")
        head = refiner.detection_head
        head.float()
        with torch.enable_grad():
            records, kept = fit_head(head, features, substituted, steps, recipe.head_epochs, recipe.learning_rate,
                                     recipe.weight_decay, recipe.seed)
        for record in records:
            self._log({"step": self.step} | record | ({"kept": True} if record is kept else {}))
        self._log({"step": self.step, "validation": self._validate()})
        self._checkpoint()
        seconds = time.perf_counter() - start
        return TrainResult(self.output_dir, self.step, seconds, 0.0, kept["detection"], last_validation(self.output_dir))

    def cleanup(self, result: TrainResult) -> None:
        """The base's cleanup, then drop the encoded features (they are large, and a finished run never resumes)."""
        super().cleanup(result)
        remove_features(self.output_dir)
