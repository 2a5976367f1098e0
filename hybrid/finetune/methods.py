"""The training methods a recipe chooses from (`train.method`), and running a recipe with its method."""

from __future__ import annotations

from hybrid.finetune.head_training import HeadTraining
from hybrid.finetune.lora_training import LoraTraining
from hybrid.finetune.recipe import Recipe
from hybrid.finetune.training import Training, TrainResult

METHODS: dict[str, type[Training]] = {"lora": LoraTraining, "head": HeadTraining}


def run_recipe(recipe: Recipe, resume: bool = False) -> TrainResult:
    training = METHODS[recipe.train.method](recipe, resume)
    training.setup()
    result = training.train()
    training.cleanup(result)
    return result
