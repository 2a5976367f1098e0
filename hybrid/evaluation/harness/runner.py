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
    system: str  # "draft", "diffusion-K8", "hybrid-K4", ...
    prompt: str
    text: str
    draft_text: str | None
    steps_run: int
    draft_s: float  # per prompt: the batch's time divided by its size
    refine_s: float
    total_s: float
    scores: dict = field(default_factory=dict)


UNVERIFIED_STEPS = 8
GROUNDED = f"hybrid-K{DEFAULT_REFINE_STEPS}-grounded"


def system_names(config: EvalConfig, grounded: bool = True) -> list[str]:
    """The systems a run scores; `grounded`: whether the suite's prompts carry sources to ground against."""
    names = ["draft", f"diffusion-K{config.diffusion_steps}", *[f"hybrid-K{k}" for k in config.hybrid_steps]]
    names += [f"hybrid-K{UNVERIFIED_STEPS}-unverified"] if config.unverified else []
    return names + ([GROUNDED] if config.grounded and grounded else [])


def has_sources(suite: Suite, examples: list[Example]) -> bool:
    return suite.task == "summarize" and all(e.source for e in examples)


def generate_samples(pipe: HybridPipeline, suite: Suite, examples: list[Example], config: EvalConfig) -> list[Sample]:
    samples: list[Sample] = []
    grounded = has_sources(suite, examples)
    systems = 1 + (pipe.refiner is not None) * (len(system_names(config, grounded)) - 1)
    bar = tqdm(total=len(examples) * systems, desc=f"generate {suite.name}", unit="sample")
    common = dict(max_new_tokens=suite.max_new_tokens, seed=config.seed)
    refine = dict(strength=config.strength, select=config.select, edit_threshold=config.edit_threshold,
                  min_change_confidence=config.min_change_confidence, verify_weight=config.verify_weight,
                  verify_window=config.verify_window)
    for start in range(0, len(examples), config.batch_size):
        batch = examples[start : start + config.batch_size]
        prompts = [e.prompt for e in batch]
        draft = pipe.draft(prompts, **common)
        runs = [("draft", pipe(prompts, refine_steps=0, draft=draft, **common))]
        if pipe.refiner is not None:
            runs.append((f"diffusion-K{config.diffusion_steps}", pipe(prompts, mode="diffusion", refine_steps=config.diffusion_steps, **common, **refine)))
            for steps in config.hybrid_steps:
                runs.append((f"hybrid-K{steps}", pipe(prompts, refine_steps=steps, draft=draft, **common, **refine)))
            if config.unverified:
                runs.append((f"hybrid-K{UNVERIFIED_STEPS}-unverified", pipe(prompts, refine_steps=UNVERIFIED_STEPS, draft=draft, verify=False,
                                                                         **common, **refine)))
            if config.grounded and grounded:
                runs.append((GROUNDED, pipe(prompts, refine_steps=DEFAULT_REFINE_STEPS, draft=draft, select="unsupported",
                                            source=[e.source for e in batch], ground_weight=config.ground_weight,
                                            ground_candidates=config.ground_candidates, verify_window=config.verify_window, **common)))
        for system, results in runs:
            for example, result in zip(batch, results):
                t, n = result.timings, len(batch)
                samples.append(Sample(example.id, system, example.prompt, result.text, result.draft_text, result.steps_run,
                                      t.draft_s / n, t.refine_s / n, t.total_s / n))
            bar.update(len(batch))
    bar.close()
    return samples
