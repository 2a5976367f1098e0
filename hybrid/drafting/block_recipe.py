"""`hybrid finetune recipes/block-drafter.yaml`: self-distil the drafter, train the block drafter, measure its tokens per
verify pass on validation prompts as it learns, and write it with its model card.

A block-drafter recipe has one top-level section, `block_drafter:`, whose keys are BlockDrafterRecipe's fields.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from hybrid.drafting.recipe_sections import read_section, section_dataclass
from hybrid.errors import HybridError

log = logging.getLogger(__name__)
SECTION = "block_drafter"


@dataclass
class BlockDrafterRecipe:
    base: str = "smollm2-135m"  # the drafter (alias, folder or hub id)
    layers: int = 4  # top layers the block drafter copies
    # the drafter's states each block reads at the position before it (hybrid.drafting.block_drafter.READS): "entering"
    # the first copied layer, its "final" normed state (EAGLE's feature), or "both"
    reads: str = "entering"
    block: int = 8  # tokens proposed per pass
    slot_embeddings: bool = False  # one learned mask embedding per block slot, not one shared by all
    t0_layers: int = 0  # the drafter's own lower layers t0 runs through before the block (0: slot 0 reads its embedding)
    lora_rank: int = 16  # LoRA of this rank on frozen copies (a few MB saved); 0: the copies themselves train
    prompts: int = 1920  # self-distillation prompts (hybrid.drafting.block_training.training_prompts)
    max_new_tokens: int = 96  # greedy continuation per prompt
    distil_batch: int = 32  # prompts continued at once
    distil_layers: int = 4  # top layers whose keys and values the distilled file keeps (at least `layers`), for reuse
    steps: int = 1200
    batch_size: int = 8  # sequences a step
    anchors: int = 8  # blocks per sequence a step
    lr: float = 1e-3
    decay: float = 0.8  # loss weight of block slot j: decay ** j
    seed: int = 0
    eval_every: int = 300  # steps between learning-curve points
    eval_prompts: int = 8  # validation prompts per point
    eval_tokens: int = 64
    output_dir: str = "runs/block-drafter"
    # A file of distilled sequences to reuse (a run writes its own beside its output folder: OUTPUT.distilled.safetensors;
    # reuse one made with the same base and at least `layers` distil_layers); empty: distil anew.
    distilled: str = ""
    use_sequences: int = 0  # train on only the first N distilled sequences (a learning curve over data); 0: all of them
    # Plain text no suite reads, read by the drafter in one pass each window, added to the distilled sequences
    # (hybrid.drafting.block_training.teacher_forced): about this many tokens; 0: none.
    text_tokens: int = 0
    text_length: int = 256  # tokens per window of plain text
    # In drafting, score only the N tokens the drafter wrote most often in the training sequences (the read-out over the
    # block costs more than the copied layers); validated once more with it. 0: the whole vocabulary.
    shortlist: int = 8192


def read_block_recipe(name: str, overrides: list[str] = ()) -> BlockDrafterRecipe | None:
    """The block-drafter recipe in file or shipped recipe `name`, or None when it is a refiner's recipe."""
    recipe = read_section(name, SECTION, BlockDrafterRecipe, overrides)
    return None if recipe is None else _checked(recipe)


def block_recipe(raw: dict, overrides: list[str] = ()) -> BlockDrafterRecipe:
    """The recipe from a parsed YAML file, with `block_drafter.key=value` overrides; one clear error for a bad key."""
    return _checked(section_dataclass(raw, SECTION, BlockDrafterRecipe, overrides))


def _checked(recipe: BlockDrafterRecipe) -> BlockDrafterRecipe:
    counts = (recipe.layers, recipe.prompts, recipe.max_new_tokens, recipe.distil_batch, recipe.steps, recipe.batch_size, recipe.anchors,
              recipe.eval_every, recipe.eval_prompts, recipe.eval_tokens)
    from hybrid.drafting.block_drafter import READS

    if recipe.reads not in READS:
        raise HybridError(f"block_drafter.reads must be one of {', '.join(READS)}, not {recipe.reads!r}")
    if min(recipe.shortlist, recipe.use_sequences, recipe.text_tokens, recipe.t0_layers, recipe.lora_rank) < 0 or recipe.text_length < 32 or recipe.block < 2 or min(counts) < 1:
        raise HybridError("block_drafter: block must be at least 2, text_length at least 32, every count at least 1 and none below 0")
    return recipe


def distilled_file(recipe: BlockDrafterRecipe) -> Path:
    return Path(recipe.output_dir.rstrip("/") + ".distilled.safetensors")


def validation_prompts(count: int) -> list[str]:
    """Prompts no training or report reads: ACLSum val papers, and the held-out plain-English passages' openings as fact
    completions and as text to continue, one kind in turn."""
    from hybrid.data.aclsum import paper_summaries
    from hybrid.data.passages import plain_passages
    from hybrid.drafting.block_training import FACT, SUMMARIZE, interleave

    passages = plain_passages(held_out=True)
    kinds = [[SUMMARIZE.format(p.source) for p in paper_summaries("val")], [FACT.format(" ".join(p.split()[:9])) for p in passages],
             [" ".join(p.split()[:32]) for p in passages]]
    return interleave(kinds, count)


def tokens_per_pass(drafter, block_drafter, prompts: list[str], max_new_tokens: int) -> dict:
    """Greedy drafting of each prompt with the block drafter's proposals (every slot, no gate): tokens per verify pass,
    and per block slot how often its proposal was kept when offered."""
    from hybrid.config import DraftConfig
    from hybrid.drafting.block_drafter import BlockProposals

    from hybrid.drafting.block_training import fitting

    prompts = fitting(drafter, prompts, max_new_tokens)
    passes = tokens = 0
    kept = [0] * block_drafter.config.block
    offered = [0] * block_drafter.config.block
    for prompt in prompts:
        # every slot proposed (no gate), so that the curve shows what the block drafter itself has learnt
        source = BlockProposals(block_drafter, min_probability=0.0)
        draft = drafter.generate(prompt, DraftConfig(max_new_tokens=max_new_tokens), source=source)
        stats = draft.speculation
        passes, tokens = passes + stats.passes, tokens + stats.tokens
        for slot, (k, o) in enumerate(zip(stats.kept, stats.offered)):
            kept[slot], offered[slot] = kept[slot] + k, offered[slot] + o
    return {"tokens_per_pass": round(tokens / max(passes, 1), 4), "kept_per_slot": [round(k / max(o, 1), 4) for k, o in zip(kept, offered)],
            "prompts": len(prompts)}


def run_block_recipe(recipe: BlockDrafterRecipe, given_path: str) -> dict:
    """Train the block drafter the recipe describes; returns the summary written beside it (summary.json)."""
    import torch

    from hybrid.drafting.block_drafter import BlockDrafter
    from hybrid.drafting.block_sequences import Sequence, frequent_tokens, load_sequences, save_sequences, with_states
    from hybrid.drafting.block_training import self_distilled, teacher_forced, text_windows, train, training_prompts
    from hybrid.drafting.drafter import Drafter
    from hybrid.drafting.model_card import write_model_card
    from hybrid.models import load_causal_lm

    torch.manual_seed(recipe.seed)
    model, tokenizer = load_causal_lm(recipe.base)
    model.requires_grad_(False)
    drafter = Drafter(model, tokenizer)
    block_drafter = BlockDrafter.create(model, recipe.base, recipe.layers, recipe.block, recipe.reads, recipe.slot_embeddings,
                                        recipe.t0_layers, recipe.lora_rank)
    final = "final" in block_drafter.reads
    started = time.perf_counter()
    if recipe.distilled:
        sequences = load_sequences(recipe.distilled)
    else:
        first = len(model.model.layers) - max(recipe.layers, recipe.distil_layers)
        sequences = self_distilled(drafter, training_prompts(recipe.prompts, recipe.seed), recipe.max_new_tokens, first,
                                   recipe.distil_batch, final=final)
        Path(recipe.output_dir).parent.mkdir(parents=True, exist_ok=True)
        save_sequences(sequences, distilled_file(recipe))
    kept = len(sequences[0].context)
    if kept < recipe.layers:
        raise HybridError(f"the distilled sequences hold keys and values of {kept} top layers, fewer than the {recipe.layers} asked for")
    chosen = sequences[: recipe.use_sequences] if recipe.use_sequences else sequences
    if recipe.text_tokens:
        windows = text_windows(tokenizer, recipe.text_tokens, recipe.text_length, recipe.seed)
        chosen = chosen + teacher_forced(drafter, windows, len(model.model.layers) - recipe.layers, final=final)
    if final or recipe.t0_layers:  # states a distilled file may lack (written for a block drafter that read none)
        chosen = with_states(drafter, chosen, final=final, lower=recipe.t0_layers)
    trained_on = [Sequence(s.ids, s.start, s.context[len(s.context) - recipe.layers:], s.greedy, s.final, s.lower, s.lower_layer)
                  for s in chosen]  # the top `layers`
    del sequences, chosen
    distil_s = time.perf_counter() - started
    validation = validation_prompts(recipe.eval_prompts)
    curve = [{"step": 0, "targets_seen": 0, **tokens_per_pass(drafter, block_drafter, validation, recipe.eval_tokens)}]
    per_step = recipe.batch_size * recipe.anchors * recipe.block

    def on_step(step, record):
        if step % recipe.eval_every == 0 or step == recipe.steps:
            curve.append({"step": step, "targets_seen": step * per_step, **tokens_per_pass(drafter, block_drafter, validation, recipe.eval_tokens)})
            log.info("step %d: %.3f tokens per pass", step, curve[-1]["tokens_per_pass"])
            block_drafter.train()

    records = train(block_drafter, trained_on, recipe.steps, recipe.batch_size, recipe.anchors, recipe.lr, recipe.decay, recipe.seed,
                    on_step=on_step)
    shortlisted = None
    if recipe.shortlist:
        block_drafter.set_shortlist(frequent_tokens(trained_on, recipe.shortlist))
        shortlisted = tokens_per_pass(drafter, block_drafter, validation, recipe.eval_tokens)
    summary = {"recipe": asdict(recipe), "recipe_file": given_path, "sequences": len(trained_on),
               "text_windows": sum(1 for s in trained_on if s.greedy is not None),
               "distilled_tokens": sum(s.tokens for s in trained_on if s.greedy is None),
               "text_tokens": sum(s.tokens for s in trained_on if s.greedy is not None), "distil_s": round(distil_s, 1),
               "train_s": round(time.perf_counter() - started - distil_s, 1), "final_loss": records[-1]["loss"], "learning_curve": curve,
               "shortlisted_validation": shortlisted}
    block_drafter.config.provenance = {"recipe": asdict(recipe), "distilled_tokens": summary["distilled_tokens"],
                                       "text_tokens": summary["text_tokens"],
                                       "targets_seen": recipe.steps * per_step, "validation": shortlisted or curve[-1]}
    output = Path(recipe.output_dir)
    block_drafter.save(output)
    (output / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (output / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    write_model_card(output, summary)
    return summary
