"""Run one suite through draft only, diffusion only and hybrid at several refine-step counts, on the same prompts.

Hybrid systems refine the very draft the draft-only system wrote (drafted once per prompt), so differences
between them are the refiner's doing; each hybrid's wall-clock still includes that draft's time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from hybrid.evaluation.harness.suite import Example, Suite
from hybrid.options import (DEFAULT_GROUND_CANDIDATES, DEFAULT_GROUND_WEIGHT, DEFAULT_MIN_CHANGE_CONFIDENCE, DEFAULT_REFINE_STEPS,
                            DEFAULT_STRENGTH, DEFAULT_VERIFY_WEIGHT, DEFAULT_VERIFY_WINDOW)
from hybrid.pipeline import HybridPipeline
from hybrid.systems import DRAFT, System

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    hybrid_steps: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    diffusion_steps: int = 8
    strength: float = DEFAULT_STRENGTH
    select: str = "auto"
    edit_threshold: float | None = None
    batch_size: int = 4
    seed: int = 0
    judge: bool = True  # perplexity under the independent judge LM (loads Gemma-3-270m)
    encoders: bool = True  # MiniLM-based metrics: coherence, BERTScore, consistency classifier
    min_change_confidence: float = DEFAULT_MIN_CHANGE_CONFIDENCE  # the old guard (0 = off)
    verify_weight: float = DEFAULT_VERIFY_WEIGHT  # hybrid systems are verified, as `hybrid generate` runs them
    verify_window: int = DEFAULT_VERIFY_WINDOW
    unverified: bool = True  # also score hybrid at K=8 with every proposal kept, to show what verification does
    # Also score grounded repair (select "unsupported", at the default K) on suites whose prompts carry a source.
    grounded: bool = True
    ground_weight: float = DEFAULT_GROUND_WEIGHT
    ground_candidates: int = DEFAULT_GROUND_CANDIDATES


@dataclass
class Sample:
    example_id: str
    system: System  # written into results.json by its name: "draft", "diffusion-K8", "hybrid-K4", ...
    prompt: str
    text: str
    draft_text: str | None
    steps_run: int
    draft_s: float  # per prompt: the batch's time divided by its size
    refine_s: float
    total_s: float
    scores: dict = field(default_factory=dict)


UNVERIFIED_STEPS = 8
GROUNDED = System("hybrid", DEFAULT_REFINE_STEPS, grounded=True)


def eval_systems(config: EvalConfig, grounded: bool = True) -> list[System]:
    """The systems a run scores, in report order; `grounded`: whether the suite's prompts carry sources to ground against."""
    systems = [DRAFT, System("diffusion", config.diffusion_steps), *[System("hybrid", k) for k in config.hybrid_steps]]
    systems += [System("hybrid", UNVERIFIED_STEPS, verified=False)] if config.unverified else []
    return systems + ([GROUNDED] if config.grounded and grounded else [])


def has_sources(suite: Suite, examples: list[Example]) -> bool:
    return suite.task == "summarize" and all(e.source for e in examples)


def _run(pipe: HybridPipeline, system: System, batch: list[Example], draft, config: EvalConfig, common: dict, refine: dict):
    prompts = [e.prompt for e in batch]
    if system.mode == "draft":
        return pipe(prompts, refine_steps=0, draft=draft, **common)
    if system.mode == "diffusion":
        return pipe(prompts, mode="diffusion", refine_steps=system.steps, **common, **refine)
    if system.grounded:
        return pipe(prompts, refine_steps=system.steps, draft=draft, select="unsupported", source=[e.source for e in batch],
                    ground_weight=config.ground_weight, ground_candidates=config.ground_candidates,
                    verify_window=config.verify_window, **common)
    unverified = {} if system.verified else {"verify": False}
    return pipe(prompts, refine_steps=system.steps, draft=draft, **unverified, **common, **refine)


def generate_samples(pipe: HybridPipeline, suite: Suite, examples: list[Example], config: EvalConfig) -> list[Sample]:
    samples: list[Sample] = []
    systems = eval_systems(config, has_sources(suite, examples)) if pipe.refiner is not None else [DRAFT]
    bar = tqdm(total=len(examples) * len(systems), desc=f"generate {suite.name}", unit="sample")
    common = dict(max_new_tokens=suite.max_new_tokens, seed=config.seed)
    refine = dict(strength=config.strength, select=config.select, edit_threshold=config.edit_threshold,
                  min_change_confidence=config.min_change_confidence, verify_weight=config.verify_weight,
                  verify_window=config.verify_window)
    for start in range(0, len(examples), config.batch_size):
        batch = examples[start : start + config.batch_size]
        draft = pipe.draft([e.prompt for e in batch], **common)
        for system in systems:
            results = _run(pipe, system, batch, draft, config, common, refine)
            for example, result in zip(batch, results):
                t, n = result.timings, len(batch)
                samples.append(Sample(example.id, system, example.prompt, result.text, result.draft_text, result.steps_run,
                                      t.draft_s / n, t.refine_s / n, t.total_s / n))
            bar.update(len(batch))
    bar.close()
    return samples
