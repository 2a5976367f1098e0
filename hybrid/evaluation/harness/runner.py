"""Run one suite through draft only, diffusion only and hybrid at several refine-step counts, on the same prompts.

Hybrid systems refine the very draft the draft-only system wrote (drafted once per prompt), so differences
between them are the refiner's doing; each hybrid's wall-clock still includes that draft's time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from tqdm.auto import tqdm

from hybrid.evaluation.harness.saved import SAVED_FIELDS, SavedSamples
from hybrid.evaluation.harness.suite import Example, Suite
from hybrid.config import DEFAULT_REFINE_STEPS, DraftConfig, SamplerConfig
from hybrid.pipeline import HybridPipeline
from hybrid.processes import is_main_process, process_count, sharded_rounds
from hybrid.evaluation.harness.systems import DRAFT, System

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    # The refine settings every system starts from (each system sets its own K, verification and selection:
    # System.refine_config); hybrid systems are verified, as `hybrid generate` runs them.
    refine: SamplerConfig = field(default_factory=SamplerConfig)
    # The drafting settings (speculation); each suite sets its own length, and the run its seed. Batches of several
    # prompts decode plainly, so speculation changes only batch-size-1 runs (and, in float32, no text).
    draft: DraftConfig = field(default_factory=DraftConfig)
    hybrid_steps: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    diffusion_steps: int = 8
    batch_size: int = 4
    seed: int = 0
    judge: bool = True  # perplexity under the independent judge LM (loads Gemma-3-270m)
    encoders: bool = True  # MiniLM-based metrics: coherence, BERTScore, consistency classifier
    unverified: bool = True  # also score hybrid at K=8 with every proposal kept, to show what verification does
    # Also score grounded repair (select "unsupported", at the default K) on suites whose prompts carry a source.
    grounded: bool = True


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


def _run(pipe: HybridPipeline, system: System, batch: list[Example], draft, draft_config: DraftConfig, config: EvalConfig):
    prompts = [e.prompt for e in batch]
    return pipe(prompts, draft_config=draft_config, refine_config=system.refine_config(config.refine), mode=system.mode,
                draft=None if system.mode == "diffusion" else draft, source=[e.source for e in batch] if system.grounded else None)


def generate_samples(pipe: HybridPipeline, suite: Suite, examples: list[Example], config: EvalConfig,
                     saved: SavedSamples | None = None) -> list[Sample]:
    """Every system's sample of every example, in batches of `config.batch_size`. Samples found in `saved` are not made
    again; new ones are saved there as each system finishes a batch. Under `accelerate launch` the batches are shared
    out to the processes (hybrid.processes) and each round is saved once gathered; every process returns all samples."""
    saved = saved or SavedSamples()
    systems = eval_systems(config, has_sources(suite, examples)) if pipe.refiner is not None else [DRAFT]
    settings = {system: system.refine_config(config.refine) for system in systems}
    draft_config = replace(config.draft, max_new_tokens=suite.max_new_tokens, seed=config.seed)
    batches = [list(range(start, min(start + config.batch_size, len(examples)))) for start in range(0, len(examples), config.batch_size)]
    missing = {(s, i) for s in systems for i in range(len(examples)) if saved.get(s, settings[s], i, examples[i]) is None}
    bar = tqdm(total=len(examples) * len(systems), initial=len(examples) * len(systems) - len(missing), desc=f"generate {suite.name}",
               unit="sample", disable=not is_main_process())
    alone = process_count() == 1  # one process saves each system's batch at once; several save each gathered round

    def work(indices: list[int]) -> list[dict]:
        batch = [examples[i] for i in indices]
        todo = [s for s in systems if any((s, i) in missing for i in indices)]
        draft = pipe.draft([e.prompt for e in batch], draft_config) if todo else None
        made = []
        for system in todo:
            results = _run(pipe, system, batch, draft, draft_config, config)
            t, n = results[0].timings, len(batch)
            records = [saved.record(system, settings[system], i, e, text=r.text, draft_text=r.draft_text, steps_run=r.steps_run,
                                    draft_s=t.draft_s / n, refine_s=t.refine_s / n, total_s=t.total_s / n)
                       for i, e, r in zip(indices, batch, results)]
            if alone:
                saved.add(records)
                bar.update(len(records))
            else:
                made += records
        return made

    for records in sharded_rounds(batches, work):
        saved.add(records)
        bar.update(len(records))
    bar.close()
    samples = []
    for indices in batches:  # report order: batch by batch, each system's rows together
        for system in systems:
            for i in indices:
                record = saved.get(system, settings[system], i, examples[i])
                samples.append(Sample(examples[i].id, system, examples[i].prompt, **{k: record[k] for k in SAVED_FIELDS}))
    return samples
