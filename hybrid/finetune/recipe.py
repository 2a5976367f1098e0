"""Recipes: YAML -> nested dataclasses, validated before any model loads.

Unknown keys name the closest valid key; wrong types name the key and the expected type; `key=value`
overrides on the command line use dotted keys (`train.steps=10`) and YAML typing for the value.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hybrid.errors import HybridError
from hybrid.resources import shipped

log = logging.getLogger(__name__)


@dataclass
class ModelSection:
    base: str = "smollm2-135m"  # drafter alias, local folder or hub id; the refiner shares its weights
    dtype: str = "float32"  # weights dtype while training: float32 or bfloat16
    init_refiner: str = ""  # start from this saved refiner (its LoRA layout) instead of fresh LoRA weights: a shipped name or a folder


@dataclass
class DataSection:
    source: str = "files"  # aclsum | general (Shakespeare + ACLSum train prose) | shakespeare | files
    files: list[str] = field(default_factory=list)  # files: local json/jsonl/csv/txt/md paths, or one hub dataset id
    split: str = "train"  # aclsum split, or the hub/datasets split
    prompt_field: str = "prompt"  # json/csv: the prompt column ("" = continuation of text_field)
    target_field: str = "target"
    text_field: str = "text"  # text/markdown or a text column: passages cut into prompt + continuation
    prompt_template: str = "{prompt}"
    exclude: list[str] = field(default_factory=list)  # shakespeare: plays held out for evaluation
    prompt_words: int = 48  # passages: words of context given as the prompt
    target_words: int = 64  # passages: words of continuation the refiner learns
    max_prompt_tokens: int = 320
    max_target_tokens: int = 96
    max_examples: int = 0  # 0 = all
    validation_size: int = 32  # held-out examples for the validation figures
    use_chat_template: bool = True  # format prompts exactly as the Drafter does at generation time


@dataclass
class ObjectiveSection:
    schedule: str = "linear"  # noise schedule for the masking rate (hybrid.refining.schedule)
    min_mask_rate: float = 0.05  # t is drawn from U(min_mask_rate, max_mask_rate)
    max_mask_rate: float = 1.0  # below 1: train where refining works (a hybrid pass re-masks 20-50% of a draft)
    substitution_rate: float = 0.15  # share of still-visible target tokens replaced by drafter samples
    substitute_top_k: int = 20  # substitutes come from the drafter's top-k, the true token excluded
    random_substitute_share: float = 0.0  # share of substitutes drawn uniformly from the vocabulary instead (blatant errors)
    clean_weight: float = 0.1  # loss weight on visible, uncorrupted tokens (calibrates confidence)
    slack: int = 4  # end tokens after the target that the refiner learns to predict (lets text shrink)
    detection_weight: float = 0.0  # > 0: add a replaced-token detection head, trained with this loss weight
    detection_layers: list[int] = field(default_factory=list)  # decoder layers the head reads (negative: from the top; []: final state)
    detection_neighbours: int = 0  # the head also reads this many positions on each side of a token
    residual_weight: float = 0.0  # > 0: the loss is taken on log p_drafter + w log p_refiner (0: on the refiner alone)
    renoised_input: str = "mask"  # what a masked slot shows the lower layers: mask | draft (the drafter's guess, marked)
    # Grounded training: this share of the target's name and number tokens that the prompt supports is masked besides
    # the random masking, so that the refiner learns to fill them from the source (hybrid.refining.grounded).
    claim_mask_rate: float = 0.0


@dataclass
class LoraSection:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    # 0: all layers see the canvas both ways; N: only the top N (with LoRA), the rest stay causal; None (unset): as
    # model.init_refiner is laid out, 0 for a new refiner. With an initial refiner, another N lays it out anew.
    bidirectional_layers: int | None = None


@dataclass
class TrainSection:
    output_dir: str = "runs/refiner"
    steps: int = 200
    batch_size: int = 8
    grad_accumulation: int = 1
    learning_rate: float = 3e-4
    warmup_steps: int = 10
    weight_decay: float = 0.0
    seed: int = 0
    mixed_precision: str = "no"  # no | bf16 (accelerate)
    eval_every: int = 50
    save_every: int = 50
    max_minutes: float = 0.0  # stop (and save) after this wall-clock budget; 0 = no budget
    # Also send the training metrics to these trackers (accelerate's log_with: tensorboard, wandb, mlflow, ...); the
    # run's train_log.jsonl is written either way. Tensorboard logs go under output_dir/trackers.
    log_with: list[str] = field(default_factory=list)
    # lora: train the LoRA weights (and a detection head beside them where the objective has one); head: only the
    # detection head trains, on the frozen refiner (windows encoded once, then the head is fit on their features)
    method: str = "lora"
    head_epochs: int = 60  # method head: epochs of fitting the head on the features of the encoded windows


@dataclass
class Recipe:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    objective: ObjectiveSection = field(default_factory=ObjectiveSection)
    lora: LoraSection = field(default_factory=LoraSection)
    train: TrainSection = field(default_factory=TrainSection)
    # What load_recipe resolved to this machine's paths, as named ("model.init_refiner", a shipped one by its name, and
    # "data.files"): saved recipes and provenance record these (`recipe_dict(recipe, as_given=True)`). Not a recipe key.
    given: dict = field(default_factory=dict, init=False, repr=False, compare=False)


def _expected(tp) -> tuple:
    origin = typing.get_origin(tp)
    if origin in (list,):
        return (list,)
    if origin in (typing.Union, types.UnionType):
        return tuple(a for a in typing.get_args(tp) if a is not type(None))
    return (tp,)


def _build(cls, raw, where: str):
    if not isinstance(raw, dict):
        raise HybridError(f"{where or 'recipe'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    values = {}
    for key, value in raw.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{(where + '.' if where else '') + close[0]}'?" if close else f"; valid keys: {', '.join(names)}"
            raise HybridError(f"unknown recipe key '{path}'{hint}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            values[key] = _build(tp, value or {}, path)
            continue
        if value is None and type(None) in typing.get_args(tp):  # an optional key left unset (a saved recipe writes null)
            values[key] = None
            continue
        allowed = _expected(tp)
        if float in allowed and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
            names_ = " or ".join(t.__name__ for t in allowed)
            raise HybridError(f"recipe key '{path}' must be {names_}, got {value!r}")
        values[key] = value
    return cls(**values)


def _apply_override(raw: dict, override: str) -> None:
    if "=" not in override:
        raise HybridError(f"override '{override}' must look like key=value (e.g. train.steps=10)")
    key, text = override.split("=", 1)
    value = yaml.safe_load(text) if text else ""
    if isinstance(value, bool) and text.strip().lower() not in ("true", "false"):
        value = text  # YAML 1.1 reads no/yes/on/off as booleans; keep the word (e.g. mixed_precision=no)
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise HybridError(f"override '{override}': '{part}' is not a section")
    node[parts[-1]] = value


def validate(recipe: Recipe) -> Recipe:
    checks = [
        (recipe.data.source in ("aclsum", "general", "shakespeare", "files"), "data.source must be aclsum, general, shakespeare or files"),
        (recipe.data.source != "files" or recipe.data.files, "data.files must list at least one file (data.source is files)"),
        (recipe.model.dtype in ("float32", "bfloat16"), "model.dtype must be float32 or bfloat16"),
        (recipe.train.mixed_precision in ("no", "bf16"), "train.mixed_precision must be no or bf16"),
        (all(t in TRACKERS for t in recipe.train.log_with), f"train.log_with must name trackers among {', '.join(TRACKERS)}"),
        (recipe.train.steps >= 1, "train.steps must be at least 1"),
        (recipe.train.batch_size >= 1, "train.batch_size must be at least 1"),
        (recipe.train.grad_accumulation >= 1, "train.grad_accumulation must be at least 1"),
        (recipe.train.learning_rate > 0, "train.learning_rate must be positive"),
        (recipe.train.eval_every >= 1 and recipe.train.save_every >= 1, "train.eval_every and train.save_every must be at least 1"),
        (0 < recipe.objective.min_mask_rate < 1, "objective.min_mask_rate must be in (0, 1)"),
        (recipe.objective.min_mask_rate < recipe.objective.max_mask_rate <= 1, "objective.max_mask_rate must be in (min_mask_rate, 1]"),
        (recipe.lora.bidirectional_layers is None or recipe.lora.bidirectional_layers >= 0,
         "lora.bidirectional_layers must be 0 (all layers) or a positive layer count"),
        (0 <= recipe.objective.substitution_rate < 1, "objective.substitution_rate must be in [0, 1)"),
        (recipe.objective.substitute_top_k >= 2, "objective.substitute_top_k must be at least 2"),
        (0 <= recipe.objective.random_substitute_share <= 1, "objective.random_substitute_share must be in [0, 1]"),
        (recipe.lora.r >= 1, "lora.r must be at least 1"),
        (recipe.data.max_target_tokens >= 4, "data.max_target_tokens must be at least 4"),
        (recipe.data.validation_size >= 2, "data.validation_size must be at least 2"),
        (recipe.objective.detection_weight >= 0, "objective.detection_weight must be 0 or positive"),
        (all(isinstance(i, int) and not isinstance(i, bool) for i in recipe.objective.detection_layers),
         "objective.detection_layers must be a list of layer indices (integers)"),
        (recipe.objective.detection_neighbours >= 0, "objective.detection_neighbours must be 0 or more"),
        (0 <= recipe.objective.residual_weight <= 10, "objective.residual_weight must be in [0, 10] (0: the refiner alone)"),
        (0 <= recipe.objective.claim_mask_rate <= 1, "objective.claim_mask_rate must be in [0, 1]"),
        (recipe.objective.renoised_input in ("mask", "draft"), "objective.renoised_input must be mask or draft"),
        (recipe.train.method in TRAINING_METHODS, "train.method must be lora (the LoRA weights) or head (only the detection head)"),
        (recipe.train.head_epochs >= 1, "train.head_epochs must be at least 1"),
        (recipe.train.method != "head" or recipe.objective.detection_weight > 0,
         "train.method is head but objective.detection_weight is 0: nothing would train"),
        (not recipe.model.init_refiner or (Path(recipe.model.init_refiner) / "refiner_config.json").is_file(),
         f"model.init_refiner {recipe.model.init_refiner!r} is not a refiner folder (no refiner_config.json)"),
    ]
    for ok, message in checks:
        if not ok:
            raise HybridError(f"recipe: {message}")
    from hybrid.config import SCHEDULE_NAMES  # not hybrid.refining.schedule: validating a recipe imports no torch

    if recipe.objective.schedule not in SCHEDULE_NAMES:
        raise HybridError(f"unknown noise schedule {recipe.objective.schedule!r}; choose one of: {', '.join(SCHEDULE_NAMES)}")
    return recipe


RECIPES_DIR = shipped("recipes")
TRAINING_METHODS = ("lora", "head")  # hybrid.finetune.methods holds their classes
TRACKERS = ("tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "trackio", "swanlab")


def shipped_recipes() -> dict[str, Path]:
    """The recipes that ship with hybrid, by name (the file name without .yaml)."""
    return {p.stem: p for p in sorted(RECIPES_DIR.glob("*.yaml"))}


def resolve_recipe(name: str | Path) -> Path:
    """A recipe file, or the name of a shipped one (`summarize` -> recipes/summarize.yaml)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = shipped_recipes()
    if str(name) in shipped:
        return shipped[str(name)]
    close = difflib.get_close_matches(str(name), list(shipped), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else f": give a YAML file or one of {', '.join(shipped)}"
    raise HybridError(f"recipe {name} does not exist{hint}")


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, override and validate a recipe (a file, or a shipped recipe's name). Relative data files resolve against
    the recipe's folder, then the cwd."""
    path = resolve_recipe(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise HybridError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    for override in overrides:
        _apply_override(raw, override)
    _translate_train_lora(raw, path)
    recipe = _build(Recipe, raw, "")
    recipe.given["data.files"] = list(recipe.data.files)
    recipe.data.files = [_resolve_file(f, path.parent) for f in recipe.data.files]
    if recipe.model.init_refiner:
        given, named = recipe.model.init_refiner, shipped(f"checkpoints/{recipe.model.init_refiner}")
        is_name = "/" not in given and (named / "refiner_config.json").is_file()  # a shipped name, as --refiner takes it
        recipe.model.init_refiner = str(named) if is_name else _resolve_file(given, path.parent)
        recipe.given["model.init_refiner"] = shipped_refiner_name(recipe.model.init_refiner) or given
    return validate(recipe)


def shipped_refiner_name(folder: str | Path) -> str | None:
    """A shipped refiner's name (`general`), however its folder was reached; None for any other folder."""
    folder = Path(folder).resolve()
    return folder.name if folder.parent == shipped("checkpoints").resolve() and (folder / "refiner_config.json").is_file() else None


def _translate_train_lora(raw: dict, path: Path) -> None:
    """Recipes written before `train.method` (the copies in checkpoints/ among them) chose it with `train.train_lora`:
    true trained the LoRA weights (method lora), false only the detection head (method head)."""
    train = raw.get("train")
    if not isinstance(train, dict) or "train_lora" not in train:
        return
    value = train.pop("train_lora")
    if not isinstance(value, bool):
        raise HybridError(f"recipe key 'train.train_lora' must be bool, got {value!r} (it is now train.method: lora or head)")
    method = "lora" if value else "head"
    if train.setdefault("method", method) != method:
        raise HybridError(f"recipe: train.train_lora {str(value).lower()} contradicts train.method {train['method']}: keep train.method only")
    log.warning("%s: train.train_lora: %s is read as train.method: %s (train_lora is the key's old name)", path,
                str(value).lower(), method)


def _resolve_file(name: str, base: Path) -> str:
    for candidate in (base / name, Path(name)):
        if candidate.exists():
            return str(candidate.resolve())
    return name  # a hub dataset id, or a missing file reported when the data loads


def recipe_dict(recipe: Recipe, as_given: bool = False) -> dict:
    """The recipe's sections as plain dicts: with the paths load_recipe resolved, or (`as_given`) with what the
    recipe named (a shipped refiner by its shipped name), as saved recipes and refiner provenance record it."""
    out = {f.name: dataclasses.asdict(getattr(recipe, f.name)) for f in dataclasses.fields(recipe) if f.init}
    if as_given:
        for key, value in recipe.given.items():
            section, name = key.split(".")
            out[section][name] = value
    return out
