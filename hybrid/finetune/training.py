"""What every training method shares: setup, train, cleanup (the torchtune recipe shape).

`Training` sets up accelerate, the recipe's data, the initial refiner and its optimizer (resuming from the last
checkpoint when asked), draws the batches, validates, checkpoints, logs and writes the final refiner. A method
(`hybrid.finetune.methods`) subclasses it with its own `train` and its own say over which weights train.

Runs unchanged on one CPU, one GPU, or several processes under `accelerate launch`. Every batch and every
corruption is drawn from generators seeded by (seed, step), so a resumed run replays exactly what an
uninterrupted one would have done.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from hybrid.errors import HybridError
from hybrid.finetune.checkpoint import load_checkpoint, load_optimizer_tensors, save_checkpoint
from hybrid.finetune.data import load_pairs, split_examples, tokenise
from hybrid.finetune.model_card import write_card
from hybrid.finetune.objective import collate
from hybrid.finetune.recipe import Recipe, recipe_dict
from hybrid.finetune.run_log import append_record, flat_config, tracker_numbers, truncate_log
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


class Training:
    """One training method's run of a recipe: `setup()`, `train()`, `cleanup(result)`."""

    trains_lora: bool  # whether the method changes the LoRA weights (and so may change what re-noised slots show)

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
            self.accelerator.init_trackers(self.output_dir.name, config=flat_config(recipe_dict(recipe, as_given=True)))
        torch.manual_seed(recipe.train.seed)
        model, self.tokenizer = load_causal_lm(recipe.model.base, recipe.model.dtype)
        self.train_examples, self.validation_examples = recipe_examples(recipe, self.tokenizer)
        self.end_id = self.tokenizer.eos_token_id
        self.pad_id = self.tokenizer.pad_token_id
        # The refiner's provenance, flat: this run's recipe as it was given (paths as the recipe named them) and its
        # step count; a run from an initial refiner adds that refiner's name, not its own provenance.
        training = {k: v for k, v in recipe_dict(recipe, as_given=True).items() if k != "train"} | {"steps": recipe.train.steps}
        refiner = self.initial_refiner(model, training)
        params = [p for p in refiner.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=recipe.train.learning_rate, weight_decay=recipe.train.weight_decay)
        self.step = 0
        if self.resume:
            refiner_tensors, optimizer_tensors, state = load_checkpoint(self.output_dir)
            refiner.load_tensors(refiner_tensors, source=str(self.output_dir))
            load_optimizer_tensors(optimizer, optimizer_tensors)
            self.step = int(state["step"])
            truncate_log(self.output_dir, self.step)
            log.info("resumed from step %d", self.step)
        elif (self.output_dir / "checkpoint-latest").exists():
            raise HybridError(f"{self.output_dir} already holds a training run: pass --resume to continue it, or choose another output_dir")
        self.refiner, self.optimizer = self.accelerator.prepare(refiner, optimizer)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        log.info("%d training and %d validation examples", len(self.train_examples), len(self.validation_examples))

    def initial_refiner(self, model, training: dict) -> Refiner:
        """Fresh LoRA weights, or the recipe's `model.init_refiner`, set up for the recipe's objective. A method
        extends this with its detection head and with which weights train."""
        recipe = self.recipe
        if recipe.model.init_refiner:
            # LoRA training lays the refiner out as the recipe's lora.bidirectional_layers says (unset: as it is);
            # head-only training keeps the initial refiner's LoRA, and so its layout, as they are.
            layers = recipe.lora.bidirectional_layers if self.trains_lora else None
            refiner = Refiner.load(recipe.model.init_refiner, model, bidirectional_layers=layers)
            refiner.config.training = training | {"initial_refiner": training["model"]["init_refiner"]}
        else:
            refiner = Refiner.create(model, recipe.model.base, recipe.lora.r, recipe.lora.alpha, recipe.lora.dropout,
                                     training=training, bidirectional_layers=recipe.lora.bidirectional_layers or 0)
        objective = recipe.objective
        if objective.residual_weight > 0:  # proposals then combine with the weight the refiner was trained through
            refiner.config.residual_weight = refiner.residual_weight = objective.residual_weight
        if objective.renoised_input != refiner.config.renoised_input:
            if recipe.model.init_refiner and not self.trains_lora:
                raise HybridError(f"objective.renoised_input {objective.renoised_input!r} differs from the initial refiner's: "
                                  "that needs LoRA training (train.method: lora)")
            refiner.config.renoised_input = objective.renoised_input
            refiner.check_renoised_input()
        return refiner

    def add_fresh_head(self, refiner: Refiner) -> None:
        """A new detection head of the objective's layout, in place of any head the initial refiner had."""
        if refiner.detection_head is not None:
            log.info("the initial refiner's detection head is replaced by a fresh one")
        refiner.add_detection_head(self.recipe.objective.detection_layers, self.recipe.objective.detection_neighbours)

    # ---- train ---------------------------------------------------------------------------------------------------

    def train(self) -> TrainResult:
        raise NotImplementedError

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

    def _validate(self) -> dict:
        unwrapped = self.accelerator.unwrap_model(self.refiner)
        figures = validate_refiner(unwrapped, self.validation_examples, self.pad_id, self.end_id, tokenizer=self.tokenizer)
        log.info("step %d validation: %s", self.step, figures)
        return figures.to_dict()

    def _checkpoint(self) -> None:
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            save_checkpoint(self.output_dir, self.accelerator.unwrap_model(self.refiner), self.optimizer, {"step": self.step})

    def _log(self, record: dict) -> None:
        append_record(self.output_dir, record)
        if self.recipe.train.log_with:
            self.accelerator.log(tracker_numbers(record), step=record.get("step"))

    # ---- cleanup -------------------------------------------------------------------------------------------------

    def cleanup(self, result: TrainResult) -> None:
        """Write the final refiner beside the run's recipe, log and validation figures."""
        if not self.accelerator.is_main_process:
            return
        self.accelerator.unwrap_model(self.refiner).write_to(self.output_dir)
        (self.output_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe_dict(self.recipe, as_given=True), sort_keys=False))
        summary = {"steps": result.steps, "seconds": round(result.seconds, 1), "tokens_per_s": round(result.tokens_per_s, 1),
                   "final_loss": result.final_loss, "validation": result.validation}
        (self.output_dir / "validation.json").write_text(json.dumps(summary, indent=2) + "\n")
        write_card(self.output_dir)
        if self.recipe.train.log_with:
            self.accelerator.end_training()


def recipe_examples(recipe: Recipe, tokenizer) -> tuple[list, list]:
    """The recipe's (training, held-out validation) examples: the same split for the same data and seed."""
    examples = tokenise(load_pairs(recipe.data), tokenizer, recipe.data)
    if recipe.objective.claim_mask_rate > 0:
        from hybrid.refining.grounded import supported_claim_tokens

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
