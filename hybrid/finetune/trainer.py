"""Training a refiner from a recipe: setup, train, cleanup (the torchtune recipe shape).

Runs unchanged on one CPU, one GPU, or several processes under `accelerate launch`. Every batch and every
corruption is drawn from generators seeded by (seed, step), so a resumed run replays exactly what an
uninterrupted one would have done.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from hybrid.errors import HybridError
from hybrid.finetune.checkpoint import load_checkpoint, load_optimizer_tensors, save_checkpoint
from hybrid.finetune.data import load_pairs, split_examples, tokenise
from hybrid.finetune.objective import collate, corrupt_batch, loss_terms
from hybrid.finetune.recipe import Recipe, recipe_dict
from hybrid.finetune.validation import validate_refiner
from hybrid.models import load_causal_lm
from hybrid.refiner import Refiner

log = logging.getLogger(__name__)


class TrainingInterrupted(HybridError):
    """Ctrl-C during training: the checkpoint was saved first."""


@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    seconds: float
    tokens_per_s: float
    final_loss: float
    validation: dict


class RefinerTrainer:
    def __init__(self, recipe: Recipe, resume: bool = False):
        self.recipe = recipe
        self.resume = resume
        self.output_dir = Path(recipe.train.output_dir)

    # ---- setup ---------------------------------------------------------------------------------------------------

    def setup(self) -> None:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        recipe = self.recipe
        self.accelerator = Accelerator(mixed_precision=recipe.train.mixed_precision,
                                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
                                       log_with=recipe.train.log_with or None, project_dir=str(self.output_dir / "trackers"))
        if recipe.train.log_with:
            self.accelerator.init_trackers(self.output_dir.name, config=_flat(recipe_dict(recipe)))
        torch.manual_seed(recipe.train.seed)
        model, self.tokenizer = load_causal_lm(recipe.model.base, recipe.model.dtype)
        self.train_examples, self.validation_examples = recipe_examples(recipe, self.tokenizer)
        self.end_id = self.tokenizer.eos_token_id
        self.pad_id = self.tokenizer.pad_token_id
        training = {k: v for k, v in recipe_dict(recipe).items() if k != "train"} | {"steps": recipe.train.steps}
        self.fresh_head = False
        refiner = self._initial_refiner(model, training)
        params = [p for p in refiner.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=recipe.train.learning_rate, weight_decay=recipe.train.weight_decay)
        self.step = 0
        if self.resume:
            refiner_tensors, optimizer_tensors, state = load_checkpoint(self.output_dir)
            refiner.load_tensors(refiner_tensors, source=str(self.output_dir))
            load_optimizer_tensors(optimizer, optimizer_tensors)
            self.step = int(state["step"])
            self._truncate_log(self.step)
            log.info("resumed from step %d", self.step)
        elif (self.output_dir / "checkpoint-latest").exists():
            raise HybridError(f"{self.output_dir} already holds a training run: pass --resume to continue it, or choose another output_dir")
        self.refiner, self.optimizer = self.accelerator.prepare(refiner, optimizer)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        log.info("%d training and %d validation examples", len(self.train_examples), len(self.validation_examples))

    def _initial_refiner(self, model, training: dict) -> Refiner:
        """Fresh LoRA weights, or the recipe's `model.init_refiner`; a detection head where the objective asks for one;
        only the head trainable when `train.train_lora` is false."""
        recipe = self.recipe
        if recipe.model.init_refiner:
            refiner = Refiner.load(recipe.model.init_refiner, model)
            refiner.config.training = training | {"initial_refiner_training": refiner.config.training}
        else:
            refiner = Refiner.create(model, recipe.model.base, recipe.lora.r, recipe.lora.alpha, recipe.lora.dropout,
                                     training=training, bidirectional_layers=recipe.lora.bidirectional_layers)
        objective = recipe.objective
        if objective.residual_weight > 0:  # proposals then combine with the weight the refiner was trained through
            refiner.config.residual_weight = refiner.residual_weight = objective.residual_weight
        if objective.renoised_input != refiner.config.renoised_input:
            if recipe.model.init_refiner and not recipe.train.train_lora:
                raise HybridError(f"objective.renoised_input {objective.renoised_input!r} differs from the initial refiner's: that needs LoRA training")
            refiner.config.renoised_input = objective.renoised_input
            refiner.check_renoised_input()
        same_head = refiner.has_detection_head(objective.detection_layers, objective.detection_neighbours)
        # A head-only run always fits a fresh head (the same recipe gives the same head whatever the folder held);
        # LoRA training keeps an initial head of the recipe's layout and trains it on.
        if objective.detection_weight > 0 and (not recipe.train.train_lora or not same_head):
            if refiner.detection_head is not None:
                log.info("the initial refiner's detection head is replaced by a fresh one")
            refiner.add_detection_head(objective.detection_layers, objective.detection_neighbours)
            self.fresh_head = True
        if not recipe.train.train_lora:
            for name, parameter in refiner.named_parameters():
                parameter.requires_grad_(name.startswith("detection_head."))
        return refiner

    # ---- train ---------------------------------------------------------------------------------------------------

    def _learning_rate(self, step: int) -> float:
        train = self.recipe.train
        if step < train.warmup_steps:
            return train.learning_rate * (step + 1) / train.warmup_steps
        progress = (step - train.warmup_steps) / max(1, train.steps - train.warmup_steps)
        return train.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))

    def _batch(self, step: int, micro: int):
        """The examples of one micro-batch: the same for a given (seed, step), this process's share of them."""
        draw = random.Random(self.recipe.train.seed * 1_000_003 + step * 101 + micro)
        indices = [draw.randrange(len(self.train_examples)) for _ in range(self.recipe.train.batch_size)]
        shard = indices[self.accelerator.process_index :: self.accelerator.num_processes] or indices[:1]
        batch = collate([self.train_examples[i] for i in shard], self.pad_id, self.end_id, self.recipe.objective.slack)
        device = self.accelerator.device
        for name in ("prompt_ids", "prompt_mask", "target_ids", "valid"):
            setattr(batch, name, getattr(batch, name).to(device))
        generator = torch.Generator().manual_seed(self.recipe.train.seed * 7_919 + step * 131 + micro * 7 + self.accelerator.process_index)
        return batch, generator

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
        """Fit a fresh head's feature standardisation on the first training batch (the LoRA training path)."""
        from hybrid.finetune.head_fit import column_moments, encode_batch

        refiner = self.accelerator.unwrap_model(self.refiner)
        batch, generator = self._batch(0, 0)
        with self.accelerator.autocast():
            features, _ = encode_batch(refiner, batch, generator, self.recipe.objective)
        refiner.detection_head.standardise_by(*column_moments(features))

    def train(self) -> TrainResult:
        if not self.recipe.train.train_lora:
            from hybrid.finetune.head_fit import train_head_on_frozen_features

            return train_head_on_frozen_features(self)
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
        return TrainResult(self.output_dir, self.step, seconds, tokens_seen / max(seconds, 1e-9), last["loss"], self._last_validation())

    def _validate(self) -> dict:
        unwrapped = self.accelerator.unwrap_model(self.refiner)
        figures = validate_refiner(unwrapped, self.validation_examples, self.pad_id, self.end_id, tokenizer=self.tokenizer)
        log.info("step %d validation: %s", self.step, figures)
        return figures.to_dict()

    # ---- cleanup -------------------------------------------------------------------------------------------------

    def _checkpoint(self) -> None:
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            save_checkpoint(self.output_dir, self.accelerator.unwrap_model(self.refiner), self.optimizer, {"step": self.step})

    def _log(self, record: dict) -> None:
        with (self.output_dir / "train_log.jsonl").open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.recipe.train.log_with:
            numbers = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}
            self.accelerator.log(numbers, step=record.get("step"))

    def _truncate_log(self, step: int) -> None:
        path = self.output_dir / "train_log.jsonl"
        if path.is_file():
            lines = [line for line in path.read_text().splitlines() if line.strip()]
            # the head fit's epoch records come after all encoding steps: a resumed run fits (and logs) them again
            kept = [line for line, record in zip(lines, map(json.loads, lines)) if record["step"] <= step and "epoch" not in record]
            path.write_text("".join(line + "\n" for line in kept))

    def _last_validation(self) -> dict:
        path = self.output_dir / "train_log.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
        with_validation = [r for r in records if "validation" in r]
        return with_validation[-1]["validation"] if with_validation else {}

    def cleanup(self, result: TrainResult) -> None:
        """Write the final refiner beside the run's recipe, log and validation figures."""
        if not self.accelerator.is_main_process:
            return
        refiner = self.accelerator.unwrap_model(self.refiner)
        refiner.write_to(self.output_dir)
        if not self.recipe.train.train_lora:
            from hybrid.finetune.head_fit import remove_features

            remove_features(self.output_dir)
        (self.output_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe_dict(self.recipe), sort_keys=False))
        summary = {"steps": result.steps, "seconds": round(result.seconds, 1), "tokens_per_s": round(result.tokens_per_s, 1),
                   "final_loss": result.final_loss, "validation": result.validation}
        (self.output_dir / "validation.json").write_text(json.dumps(summary, indent=2) + "\n")
        from hybrid.finetune.model_card import write_card

        write_card(self.output_dir)
        if self.recipe.train.log_with:
            self.accelerator.end_training()


def _flat(tree: dict, prefix: str = "") -> dict:
    """A nested recipe as one level of dotted keys with tracker-friendly values (lists become strings)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


def recipe_examples(recipe: Recipe, tokenizer) -> tuple[list, list]:
    """The recipe's (training, held-out validation) examples: the same split for the same data and seed."""
    examples = tokenise(load_pairs(recipe.data), tokenizer, recipe.data)
    if recipe.objective.claim_mask_rate > 0:
        from hybrid.grounded import supported_claim_tokens

        for example in examples:
            source = tokenizer.decode(example.prompt_ids, skip_special_tokens=True)
            example.claims = supported_claim_tokens(tokenizer, example.target_ids, source)
    return split_examples(examples, recipe.data.validation_size, recipe.train.seed)


def validate_saved_refiner(recipe: Recipe, folder: str) -> dict:
    """Validation figures of a saved refiner on the examples `recipe` holds out (compare refiners on equal terms)."""
    model, tokenizer = load_causal_lm(recipe.model.base, recipe.model.dtype)
    _, validation = recipe_examples(recipe, tokenizer)
    refiner = Refiner.load(folder, model)
    return validate_refiner(refiner, validation, tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer=tokenizer).to_dict()


def run_recipe(recipe: Recipe, resume: bool = False) -> TrainResult:
    trainer = RefinerTrainer(recipe, resume)
    trainer.setup()
    result = trainer.train()
    trainer.cleanup(result)
    return result
