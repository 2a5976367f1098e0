"""The block drafter's model card: what it is, the tokens it trained on, its tokens per verify pass and acceptance per
block slot on validation prompts, and its learning curve (README.md beside the weights)."""

from __future__ import annotations

from pathlib import Path

READS_SAID = {"entering": "state (its input to the first copied layer)", "final": "final normed state (the feature EAGLE reads)",
              "both": "states (its input to the first copied layer and its final normed state)"}


def write_model_card(folder: Path, summary: dict) -> None:
    recipe, curve = summary["recipe"], summary["learning_curve"]
    last = curve[-1]
    rows = "\n".join(f"| {p['step']} | {p['targets_seen']:,} | {p['tokens_per_pass']:.3f} | "
                     + ", ".join(f"{k:.2f}" for k in p["kept_per_slot"]) + " |" for p in curve)
    card = f"""---
license: apache-2.0
base_model: HuggingFaceTB/SmolLM2-135M-Instruct
library_name: hybrid
tags: [speculative-decoding, block-diffusion, self-distillation]
---

# Block drafter for `{recipe['base']}`

A block-diffusion proposal head for speculative drafting (`hybrid generate --speculate diffusion`): copies of the
drafter's top {recipe['layers']} layers start from the drafter's own {READS_SAID[recipe.get('reads', 'entering')]} before the block, read its cached keys and
values of the context, and fill a block [next token, {recipe['block'] - 1} masks] in one pass; the drafter keeps the
proposals it agrees with (hybrid.drafting.block_drafter). {_slots_said(recipe)} Written by `hybrid finetune {summary['recipe_file']}`.

## Training

- Self-distillation: the drafter's greedy continuations ({recipe['max_new_tokens']} new tokens at most) of
  {summary['sequences'] - summary.get('text_windows', 0)} prompts in the eval suites' shapes from text no suite reads (training Shakespeare plays, ACLSum
  train papers, the training plain-English passages): {summary['distilled_tokens']:,} distilled tokens.{_text_line(summary)}
- {recipe['steps']} steps of {recipe['batch_size']} sequences x {recipe['anchors']} random anchors x {recipe['block']} block
  slots: {curve[-1]['targets_seen']:,} target tokens seen, loss weight {recipe['decay']}^slot, AdamW lr {recipe['lr']}.
- Time on the machine that trained it: {summary['distil_s']:.0f} s of {_data_work(recipe)}, {summary['train_s']:.0f} s of
  training and validation. Final training loss {summary['final_loss']:.3f}.

## Validation ({last['prompts']} prompts no training or report reads: ACLSum val papers, held-out plain-English passages)

Greedy drafting of {recipe['eval_tokens']} tokens with the block drafter's proposals alone, every slot proposed (no gate). Tokens per verify pass counts
the drafter's own token of each pass; "kept per slot" is, for block slot j, the share of passes that offered a
proposal there in which the drafter kept it (a slot is offered only while the text has room).

| step | target tokens seen | tokens per verify pass | kept per slot |
|---|---|---|---|
{rows}
{_shortlist_line(summary)}"""
    (folder / "README.md").write_text(card)


def _text_line(summary: dict) -> str:
    if not summary.get("text_tokens"):
        return ""
    return (f"\n- Plain text no suite reads (the same sources), read by the drafter in one pass per window of {summary['recipe']['text_length']} "
            f"tokens ({summary.get('text_windows', 0)} windows): {summary['text_tokens']:,} anchor tokens, each block slot's target the drafter's own greedy choice where the text "
            "so far is on its greedy path.")


def _slots_said(recipe: dict) -> str:
    """How the block's slots start."""
    first = (f"the next token run through the drafter's own first {recipe['t0_layers']} layers" if recipe.get("t0_layers")
             else "the next token's embedding")
    masks = "its own learned mask embedding" if recipe.get("slot_embeddings") else "one learned mask embedding"
    adapted = (f" The copies keep the drafter's weights, frozen, under LoRA of rank {recipe['lora_rank']}." if recipe.get("lora_rank")
               else "")
    return f"Slot 0 reads {first}; every other slot {masks}.{adapted}"


def _data_work(recipe: dict) -> str:
    """What the seconds before training went on."""
    parts = ["reading the distilled file of an earlier run" if recipe.get("distilled") else "self-distillation"]
    if recipe.get("distilled") and recipe.get("reads", "entering") != "entering":
        parts.append("computing the drafter's final states over it")
    if recipe.get("t0_layers"):
        parts.append(f"computing the drafter's states entering its layer {recipe['t0_layers']}")
    if recipe.get("text_tokens"):
        parts.append("reading plain text")
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _shortlist_line(summary: dict) -> str:
    shortlisted = summary.get("shortlisted_validation")
    if not shortlisted:
        return ""
    return (f"\nIn drafting, its read-out scores only the {summary['recipe']['shortlist']:,} tokens the drafter wrote most often in the "
            f"training sequences. With that shortlist, after the last step: {shortlisted['tokens_per_pass']:.3f} tokens per verify pass, "
            "kept per slot " + ", ".join(f"{k:.2f}" for k in shortlisted["kept_per_slot"]) + ".\n")

