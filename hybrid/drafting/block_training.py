"""Training the block drafter on the drafter's own greedy continuations (self-distillation), and on plain text read
once by the drafter (teacher forcing).

On a greedy continuation, the tokens after any position are exactly what greedy drafting from there writes, so every
position of it is a training anchor: the block [token at a, MASK x (P-1)] learns the tokens at a+1 .. a+P, reading the
drafter's cached keys and values of the positions before a. Those are computed once per sequence, while it is
written (the frozen drafter never changes them), and serve every anchor of it. The loss weights block slot j by
`decay`^j: the first proposals decide how many the drafter keeps.

Greedy continuations cost one decode step per token. Plain text costs one parallel pass, which also gives the
drafter's own choice after every position. Block slot j after anchor a then has an exact target, the token greedy
drafting would write there, wherever the text up to a + j is what greedy drafting would have written (slot 0:
always); elsewhere it has none. So plain text yields self-distillation targets, fewer per anchor, at a fraction of
the cost.
"""

from __future__ import annotations

import logging
import math
import random
import re

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from hybrid.drafting.block_sequences import Sequence, layer_inputs

log = logging.getLogger(__name__)


HELD_OUT_PLAYS = ("hamlet", "macbeth", "the-tempest")  # the continue suite's plays: no training reads them
SUMMARIZE = "Summarize the challenge, approach and outcome of this paper in three sentences.\n\n{}"
FACT = "Complete the sentence with the correct fact: {}"


def training_prompts(count: int, seed: int = 0) -> list[str]:
    """`count` prompts in the shapes of the eval suites, from text no suite reads: 32-word windows of the training
    plays (continue), ACLSum train papers (summarize), and the opening words of the training plain-English passages
    as fact completions and as text to continue. Shuffled, one kind in turn."""
    from hybrid.data.aclsum import paper_summaries
    from hybrid.data.passages import plain_passages
    from hybrid.data.shakespeare import shakespeare_texts

    rng = random.Random(seed)
    words = [w for text in shakespeare_texts(list(HELD_OUT_PLAYS)) for w in text.split()]
    plays = [" ".join(words[i : i + 32]) for i in rng.sample(range(len(words) - 32), count)]
    papers = [SUMMARIZE.format(p.source) for p in paper_summaries("train")]
    text = " ".join(plain_passages(held_out=False))
    starts = [0] + [m.end() for m in re.finditer(r"[.!?] ", text)]  # every sentence of the passages
    facts = [FACT.format(" ".join(text[i:].split()[: rng.randrange(6, 14)])) for i in starts]
    openings = [" ".join(text[i:].split()[:32]) for i in starts]
    kinds = [plays, papers, facts, openings]
    for kind in kinds:
        rng.shuffle(kind)
    return interleave(kinds, count)


def interleave(kinds: list[list[str]], count: int) -> list[str]:
    """The first `count` of one item of each kind in turn, each kind while it lasts."""
    return [kind[i] for i in range(count) for kind in kinds if i < len(kind)][:count]


def fitting(drafter, prompts: list[str], max_new_tokens: int) -> list[str]:
    """The prompts that leave room for `max_new_tokens` in the drafter's context (the others are left out, logged)."""
    from hybrid.drafting.drafter import encode_prompt

    fits = [p for p in prompts if len(encode_prompt(drafter.tokenizer, p, drafter.use_chat_template)) + max_new_tokens
            <= drafter.context_length]
    if len(fits) < len(prompts):
        log.warning("%d of %d prompts leave no room for %d new tokens in the model's context: left out", len(prompts) - len(fits),
                    len(prompts), max_new_tokens)
    return fits


@torch.inference_mode()
def self_distilled(drafter, prompts: list[str], max_new_tokens: int, first_layer: int, batch_size: int = 16,
                   progress: bool = True, final: bool = False) -> list[Sequence]:
    """The drafter's greedy continuation of each prompt (hybrid.drafting.drafter.Drafter), cut after its first end
    token, with its keys, values and input states from `first_layer` up (and with `final`, its final normed states)."""
    model, tokenizer = drafter.model, drafter.tokenizer
    end_ids, layers = drafter.end_ids, range(first_layer, len(model.model.layers))
    prompts, sequences = fitting(drafter, prompts, max_new_tokens), []
    for start in tqdm(range(0, len(prompts), batch_size), desc="self-distil", unit="batch", disable=not progress):
        ids, mask = drafter.encode_prompts(prompts[start : start + batch_size], max_new_tokens)
        with layer_inputs(model, layers, final) as states:
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                 return_dict_in_generate=True, pad_token_id=tokenizer.pad_token_id, eos_token_id=sorted(end_ids))
        cache, width = out.past_key_values, ids.shape[1]
        states = {i: torch.cat(chunks, dim=1) for i, chunks in states.items()}
        for row in range(ids.shape[0]):
            new = out.sequences[row, width:].tolist()
            ends = [i for i, t in enumerate(new) if t in end_ids]
            new = new[: ends[0] + 1] if ends else new
            valid = int(mask[row].sum())
            full = ids[row, width - valid :].tolist() + new
            seen = width - valid + len(full) - 1  # the cache holds every slot but the last token's
            context = [(cache.layers[i].keys[row, :, width - valid : seen].float().clone(),
                        cache.layers[i].values[row, :, width - valid : seen].float().clone(),
                        states[i][row, width - valid : seen].clone()) for i in layers]
            kept = states["final"][row, width - valid : seen].clone() if final else None
            sequences.append(Sequence(torch.tensor(full), valid, context, final=kept))
    return sequences


def text_windows(tokenizer, tokens: int, length: int, seed: int = 0) -> list[list[int]]:
    """About `tokens` tokens of plain text no suite reads, as windows of `length` token ids, one kind in turn: the
    training plays, ACLSum train papers, the training plain-English passages (texts tokenised in a random order until
    each kind has its share)."""
    from hybrid.data.aclsum import paper_texts
    from hybrid.data.passages import plain_passages
    from hybrid.data.shakespeare import shakespeare_texts

    rng, count = random.Random(seed), max(1, tokens // length)
    kinds = []
    for texts in (shakespeare_texts(list(HELD_OUT_PLAYS)), paper_texts("train"), plain_passages(held_out=False)):
        rng.shuffle(texts)
        ids, windows = [], []
        for text in texts:
            if len(windows) >= count:
                break
            ids += tokenizer(text + "\n\n", add_special_tokens=False)["input_ids"]
            windows += [ids[i : i + length] for i in range(0, len(ids) - length + 1, length)]
            ids = ids[len(ids) // length * length :]
        rng.shuffle(windows)
        kinds.append(windows)
    return interleave(kinds, count)


@torch.inference_mode()
def teacher_forced(drafter, windows: list[list[int]], first_layer: int, start: int = 16, batch_size: int = 4,
                   progress: bool = True, final: bool = False) -> list[Sequence]:
    """Each window of plain text read by the drafter in one pass: its keys, values and input states from `first_layer`
    up (and with `final`, its final normed states), and its greedy choice after every position. Anchors start at
    `start` (some context before each)."""
    model, layers = drafter.model, range(first_layer, len(drafter.model.model.layers))
    sequences = []
    for at in tqdm(range(0, len(windows), batch_size), desc="read text", unit="batch", disable=not progress):
        chunk = windows[at : at + batch_size]
        width = min(len(w) for w in chunk)
        ids = torch.tensor([w[:width] for w in chunk], device=model.device)
        with layer_inputs(model, layers, final) as states:
            out = model(input_ids=ids, use_cache=True)
        states = {i: calls[0] for i, calls in states.items()}  # one pass
        greedy, cache = out.logits.argmax(-1).cpu(), out.past_key_values
        for row in range(len(chunk)):
            context = [(cache.layers[i].keys[row, :, : width - 1].float().cpu().clone(),
                        cache.layers[i].values[row, :, : width - 1].float().cpu().clone(),
                        states[i][row, : width - 1].cpu().clone()) for i in layers]
            kept = states["final"][row, : width - 1].cpu().clone() if final else None
            sequences.append(Sequence(ids[row].cpu(), min(start, width - 2), context, greedy[row], kept))
    return sequences


def anchor_batch(sequences: list[Sequence], anchors: int, block: int, rng: random.Random, reads=("entering",), lower: bool = False):
    """A training batch: per sequence `anchors` random positions of its continuation. Returns the block token ids
    (S, A, P) (slot 0 the anchor's token), the drafter's states before each anchor (S, A, H; with `lower`, then the
    anchor token's own state entering the sequences' lower layer, as BlockDrafter.block_inputs reads), positions (S, A*P),
    targets (S, A*P) (-100 past the sequence), the context's keys and values per layer padded to the longest
    (S, kv_heads, T, d), and the attention mask."""
    width = max(len(s.ids) for s in sequences)
    tokens, states, positions, targets, mask = [], [], [], [], []
    for s in sequences:
        starts = [rng.randrange(s.start, len(s.ids) - 1) for _ in range(anchors)]
        slot = torch.arange(block)
        tokens.append(torch.stack([s.ids[a].repeat(block) for a in starts]))
        before = s.states(reads)[torch.tensor(starts) - 1]
        states.append(torch.cat([before, s.lower[torch.tensor(starts)]], dim=-1) if lower else before)
        positions.append(torch.cat([a + slot for a in starts]))
        targets.append(torch.cat([s.targets(a, block) for a in starts]))
        seen = torch.zeros(anchors * block, width - 1 + anchors * block, dtype=torch.bool)
        for i, a in enumerate(starts):
            rows = slice(i * block, (i + 1) * block)
            seen[rows, :a] = True  # the context before the anchor
            seen[rows, width - 1 + i * block : width - 1 + (i + 1) * block] = True  # its own block, both ways
        mask.append(seen)
    layers = len(sequences[0].context)
    context = []
    for layer in range(layers):
        keys = torch.stack([F.pad(s.context[layer][0], (0, 0, 0, width - 1 - s.context[layer][0].shape[1])) for s in sequences])
        values = torch.stack([F.pad(s.context[layer][1], (0, 0, 0, width - 1 - s.context[layer][1].shape[1])) for s in sequences])
        context.append((keys, values))
    return (torch.stack(tokens), torch.stack(states), torch.stack(positions), torch.stack(targets), context,
            torch.stack(mask)[:, None])


def block_loss(block_drafter, batch, decay: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The slot-weighted cross-entropy of a batch, and the per-slot accuracy (P,) of the greedy proposal."""
    tokens, states, positions, targets, context, mask = batch
    block = tokens.shape[-1]
    hidden = block_drafter.block_inputs(tokens, states).flatten(1, 2)
    logits = block_drafter(hidden, positions, context, mask)
    losses = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100, reduction="none").view(targets.shape)
    weights = (decay ** torch.arange(block, dtype=torch.float)).repeat(targets.shape[1] // block)[None] * (targets >= 0)
    loss = (losses * weights).sum() / weights.sum().clamp(min=1e-9)
    hits = ((logits.argmax(-1) == targets) & (targets >= 0)).view(targets.shape[0], -1, block).float()
    valid = (targets >= 0).view(targets.shape[0], -1, block).float()
    return loss, hits.sum((0, 1)) / valid.sum((0, 1)).clamp(min=1)


def train(block_drafter, sequences: list[Sequence], steps: int, batch_size: int = 8, anchors: int = 8, lr: float = 3e-4,
          decay: float = 0.8, seed: int = 0, warmup: int = 20, on_step=None, progress: bool = True) -> list[dict]:
    """AdamW with warm-up and cosine decay over the block drafter's own weights. `on_step(step, record)` after each
    step. Returns the per-step records (loss, per-slot accuracy)."""
    rng = random.Random(seed)
    parameters = [p for p in block_drafter.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    block_drafter.train()
    records = []
    bar = tqdm(range(steps), desc="block drafter", unit="step", disable=not progress)
    for step in bar:
        batch = anchor_batch(rng.sample(sequences, min(batch_size, len(sequences))), anchors, block_drafter.config.block, rng,
                             block_drafter.reads, lower=block_drafter.config.t0_layers > 0)
        loss, accuracy = block_loss(block_drafter, batch, decay)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        record = {"step": step + 1, "loss": float(loss.detach()), "accuracy": [round(float(a), 4) for a in accuracy]}
        records.append(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", first=f"{record['accuracy'][0]:.2f}")
        if on_step is not None:
            on_step(step + 1, record)
    block_drafter.eval()
    return records
