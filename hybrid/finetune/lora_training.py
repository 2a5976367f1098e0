"""`train.method: lora`: train the refiner's LoRA weights (and a detection head beside them when the objective has one)
step by step on freshly corrupted batches, with warm-up and cosine learning-rate decay."""

from __future__ import annotations

import logging
import math
import time

from tqdm.auto import tqdm

from hybrid.finetune.head_features import column_moments, encode_batch
from hybrid.finetune.objective import corrupt_batch, loss_terms
from hybrid.finetune.run_log import last_validation
from hybrid.finetune.training import Training, TrainingInterrupted, TrainResult
from hybrid.refiner import Refiner

log = logging.getLogger(__name__)


class LoraTraining(Training):
    trains_lora = True

    def initial_refiner(self, model, training: dict) -> Refiner:
        """An initial detection head of the recipe's layout trains on; otherwise a fresh one is added where the objective
        asks for a head."""
        refiner = super().initial_refiner(model, training)
        objective = self.recipe.objective
        self.fresh_head = False
        if objective.detection_weight > 0 and not refiner.has_detection_head(objective.detection_layers, objective.detection_neighbours):
            self.add_fresh_head(refiner)
            self.fresh_head = True
        return refiner

    def _learning_rate(self, step: int) -> float:
        train = self.recipe.train
        if step < train.warmup_steps:
            return train.learning_rate * (step + 1) / train.warmup_steps
        progress = (step - train.warmup_steps) / max(1, train.steps - train.warmup_steps)
        return train.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))

    def _train_step(self, step: int) -> tuple[dict, int]:
        unwrapped = self.accelerator.unwrap_model(self.refiner)
        objective = self.recipe.objective
        accumulation = self.recipe.train.grad_accumulation
        for group in self.optimizer.param_groups:
            group["lr"] = self._learning_rate(step)
        totals, tokens = {}, 0
        for micro in range(accumulation):
            batch, generator = self._batch(step, micro)
            corruption = corrupt_batch(unwrapped, batch, objective, generator)
            with self.accelerator.autocast():
                output = self.refiner(batch.prompt_ids, batch.prompt_mask, corruption.canvas, detect=True, shown=corruption.shown)
                terms = loss_terms(output.logits, batch, corruption, objective.clean_weight, output.keep_logits, objective.detection_weight,
                                   objective.residual_weight)
            self.accelerator.backward(terms["loss"] / accumulation)
            for name, value in terms.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach()) / accumulation
            tokens += int(batch.prompt_mask.sum() + batch.valid.sum())
        self.accelerator.clip_grad_norm_([p for p in self.refiner.parameters() if p.requires_grad], 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad()
        return totals, tokens

    def _standardise_fresh_head(self) -> None:
        """Fit a fresh head's feature standardisation on the first training batch."""
        refiner = self.accelerator.unwrap_model(self.refiner)
        batch, generator = self._batch(0, 0)
        with self.accelerator.autocast():
            features, _ = encode_batch(refiner, batch, generator, self.recipe.objective)
        refiner.detection_head.standardise_by(*column_moments(features))

    def train(self) -> TrainResult:
        if self.fresh_head and self.step == 0:
            self._standardise_fresh_head()
        recipe = self.recipe.train
        main = self.accelerator.is_main_process
        start = time.perf_counter()
        tokens_seen, last = 0, {"loss": float("nan")}
        bar = tqdm(total=recipe.steps, initial=self.step, desc="finetune", unit="step", disable=not main)
        self.refiner.train()
        try:
            while self.step < recipe.steps:
                last, tokens = self._train_step(self.step)
                self.step += 1
                tokens_seen += tokens
                rate = tokens_seen / (time.perf_counter() - start)
                bar.set_postfix(loss=f"{last['loss']:.3f}", tok_s=f"{rate:.0f}")
                bar.update()
                elapsed = round(time.perf_counter() - start, 3)  # seconds since this process began training
                record = {"step": self.step, "lr": self._learning_rate(self.step - 1), "tokens_per_s": rate, "elapsed_s": elapsed} | last
                if self.step % recipe.eval_every == 0 or self.step == recipe.steps:
                    record["validation"] = self._validate()
                if main:
                    self._log(record)
                if self.step % recipe.save_every == 0:
                    self._checkpoint()
                if recipe.max_minutes and time.perf_counter() - start > recipe.max_minutes * 60:
                    log.warning("time budget of %.1f min reached at step %d: stopping", recipe.max_minutes, self.step)
                    if "validation" not in record:
                        record = {"step": self.step, "validation": self._validate()}
                        if main:
                            self._log(record)
                    break
        except KeyboardInterrupt:
            bar.close()
            self._checkpoint()
            raise TrainingInterrupted(f"interrupted: checkpoint saved at step {self.step} in {self.output_dir}; continue with --resume")
        bar.close()
        self._checkpoint()
        seconds = time.perf_counter() - start
        return TrainResult(self.output_dir, self.step, seconds, tokens_seen / max(seconds, 1e-9), last["loss"],
                           last_validation(self.output_dir))
