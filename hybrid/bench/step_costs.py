"""What one refine step and one verify pass cost against one decode step of the drafter (AR-token equivalents), and
the memory bandwidth that bounds a decode step."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from hybrid.config import DraftConfig, SamplerConfig, default_slack
from hybrid.models import synchronize
from hybrid.refining.verify import DrafterScorer

PROMPTS = [
    "The history of Rome",
    "Explain how a refrigerator keeps food cold.",
    "Write a short letter to a friend about a trip to the sea.",
    "What are the main causes of the French Revolution?",
    "Describe the life cycle of a butterfly.",
    "Give three tips for learning a new language.",
    "Summarise the plot of Romeo and Juliet.",
    "Why is the sky blue?",
]


@dataclass
class StepCost:
    dtype: str
    batch: int
    canvas: int  # slots: the new tokens, and the slack where the default canvas has one
    decode_step_s: float  # one AR decode step of the drafter
    # one refiner forward over the whole canvas (prompt cached), every layer run, its head read as the default proposal
    # reads it
    refine_step_s: float
    ar_token_equivalents: float
    # A following step whose lower-layer inputs did not change (Refiner.reuse_lower: only the top layers and the head
    # run); None for a refiner whose every layer is bidirectional.
    reused_step_s: float | None = None
    reused_ar_token_equivalents: float | None = None
    # The verify pass for one change in the middle of a real draft (DrafterScorer.token_logprobs): every layer from the
    # changed slot over one verify window (it and the `verify_window` after it), drafting's cache before it.
    verify_pass_s: float | None = None

    @property
    def lower_layers_s(self) -> float | None:
        """What the lower layers cost in a full step: the full step minus one that reuses them."""
        return None if self.reused_step_s is None else self.refine_step_s - self.reused_step_s


def median_time(call, repeats: int, warmup: int, budget_s: float = 0.0) -> tuple[float, list]:
    """Median wall-clock of `call` over `repeats` runs after `warmup` untimed ones; with `budget_s` > 0, repeating
    stops early once the timed runs add up to more than it (a 30 s run needs no third repeat to be steady)."""
    for _ in range(warmup):
        call()
    seconds, outputs = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        outputs.append(call())
        seconds.append(time.perf_counter() - start)
        if budget_s > 0 and sum(seconds) > budget_s:
            break
    return statistics.median(seconds), outputs


def measure_bandwidth_gbs(megabytes: int = 512, device: torch.device | str = "cpu") -> float:
    """Sustained read bandwidth of the device, measured by summing a large tensor (the bound for a decode step)."""
    device = torch.device(device)
    data = torch.ones(megabytes * 2**20 // 4, dtype=torch.float32, device=device)
    data.sum()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(5):
        data.sum()
    synchronize(device)
    return 5 * data.numel() * 4 / (time.perf_counter() - start) / 1e9


def default_canvas(tokens: int) -> int:
    """Slots of the default refine canvas over a draft of `tokens` cut at its limit (the bench's): no slack under
    verification, where such a draft may not grow (hybrid.refining.canvas.with_slack)."""
    config = SamplerConfig()
    return tokens if config.verify else tokens + default_slack(config.select)


def step_cost(pipe, dtype: str, batch: int, tokens: int, decode_step_s: float, repeats: int) -> StepCost:
    prompts = (PROMPTS * batch)[:batch]
    prompt_ids, prompt_mask = pipe.drafter.encode_prompts(prompts, tokens)
    refiner, config, width = pipe.refiner, SamplerConfig(), default_canvas(tokens)
    canvas = torch.full((batch, width), refiner.mask_token_id, dtype=torch.long, device=prompt_ids.device)
    need = torch.ones(canvas.shape, dtype=torch.bool, device=canvas.device)
    vocab = refiner.model.get_output_embeddings().weight.shape[0]
    # The default proposal scores each slot's shortlist (which tokens are listed does not change the cost), and the
    # whole vocabulary where its change would pass the guard: one slot a text here. The bench prompt's refinement had
    # one such slot in 6 (fp32) or 7 (bf16) of its 8 steps; at batch 8, 2 to 24 a step. A few rows read the whole
    # weight once however many they are (fp32: 13 ms for 1 row, 19 ms for 8, 21 ms for 16 on the 2-core CPU).
    ids = torch.randint(vocab, (batch * width, config.shortlist + 1), generator=torch.Generator().manual_seed(0)).to(canvas.device)
    whole = torch.zeros(batch, width, dtype=torch.bool, device=canvas.device)
    whole[:, width // 2] = True
    whole = whole.flatten()

    def step(fresh: bool):
        if fresh:
            state.lower = None  # nothing kept: every layer runs
        if config.shortlist:
            refiner.listed_logits(state, canvas, need, ids, whole)
        else:
            refiner.needed_logits(state, canvas, need)
        synchronize(canvas.device)  # GPU work is asynchronous: time it to the end

    def verify():
        scorer.token_logprobs(drafter_state, changed, window)
        synchronize(canvas.device)

    with torch.inference_mode():
        state = refiner.encode_prompt(prompt_ids, prompt_mask)
        seconds, _ = median_time(lambda: step(True), repeats, 1)
        reused = verify_s = None
        if refiner.reuses_lower:
            reused, _ = median_time(lambda: step(False), repeats, 1)
    # the verify pass for one change in the middle of a real draft: drafting's keys and values serve before it
    draft = pipe.drafter.generate(prompts, DraftConfig(max_new_tokens=tokens, ignore_eos=True, seed=0, keep_distributions=True))
    scorer, drafter_state = DrafterScorer(refiner.model, refiner.adapter_disabled), DrafterScorer.prompt_from_draft(draft)
    middle = draft.token_ids.shape[1] // 2
    changed = draft.token_ids.clone()
    changed[:, middle] = torch.where(changed[:, middle] == 1, 2, 1)  # another token
    window = torch.zeros(changed.shape, dtype=torch.bool, device=changed.device)
    window[:, middle : middle + config.verify_window + 1] = True
    with torch.inference_mode():
        verify_s, _ = median_time(verify, repeats, 1)
    return StepCost(dtype, batch, width, decode_step_s, seconds, seconds / decode_step_s, reused,
                    reused / decode_step_s if reused is not None else None, verify_s)
