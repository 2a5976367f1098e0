"""`hybrid eval`: load a suite, generate with every system, score, and write the report."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from hybrid.evaluation.harness.report import summarise, write_report, verdicts
from hybrid.evaluation.harness.runner import GROUNDED, EvalConfig, eval_systems, generate_samples, has_sources
from hybrid.evaluation.harness.saved import SavedSamples
from hybrid.evaluation.harness.scoring import score_samples
from hybrid.evaluation.harness.suite import load_examples, load_suite
from hybrid.processes import is_main_process
from hybrid.refiner.location import DEFAULT_REFINER
from hybrid.resources import output_root

log = logging.getLogger(__name__)


def metric_validations(suite_task: str) -> dict:
    """The figures that say each metric measures what it claims (see hybrid/evaluation/harness/validate.py)."""
    from hybrid.evaluation.harness.validate import (validate_classifier, validate_classifier_on_hallucinations, validate_grounding,
                                            validate_judge)

    figures = {"grounding": dataclasses.asdict(validate_grounding())}
    figures["judge"] = dataclasses.asdict(validate_judge())
    if suite_task == "summarize":
        figures["consistency_classifier"] = dataclasses.asdict(validate_classifier())
        figures["consistency_classifier_real_drafts"] = dataclasses.asdict(validate_classifier_on_hallucinations())
    for value in figures.values():
        value.pop("per_passage", None)
    return figures


def _default_folder(suite) -> Path:
    return output_root() / "evals" / "reports" / suite.name


def report_folder(suite_name: str) -> Path:
    """Where `hybrid eval SUITE` writes its report when no --output is given."""
    return _default_folder(load_suite(suite_name)[0])


def run_suite(suite_name: str, config: EvalConfig | None = None, *, limit=None, draft_model="smollm2-135m", refiner=None,
              dtype="float32", validate_metrics=False, output: Path | None = None):
    """Generate with every system of `config` on the suite's prompts, score, and write the report. Resumes an
    interrupted run into the same folder (hybrid.evaluation.harness.saved). Under `accelerate launch` every process
    generates its share and only the main one scores and writes: the others return (None, None)."""
    from hybrid.pipeline import HybridPipeline

    suite, base = load_suite(suite_name)
    config = config or EvalConfig()
    for system in eval_systems(config):  # fail on bad numbers before loading models
        system.refine_config(config.refine).validate()
    examples = load_examples(suite, base, limit)
    started = time.perf_counter()
    refiner = refiner or suite.refiner
    folder = output or _default_folder(suite)
    saved = SavedSamples(folder, {"suite": suite.name, "draft model": draft_model, "refiner": refiner, "dtype": dtype,
                                  "batch size": config.batch_size, "seed": config.seed, "max new tokens": suite.max_new_tokens})
    pipe = HybridPipeline.from_pretrained(draft_model=draft_model, refiner=refiner, dtype=dtype)
    if pipe.refiner is None:
        log.warning("no refiner available: only the draft-only system is evaluated")
    samples = generate_samples(pipe, suite, examples, config, saved)
    refine = config.refine.resolved(pipe.refiner is not None, pipe.default_select)
    del pipe
    if not is_main_process():
        return None, None
    score_samples(samples, examples, suite, config)
    grounded = has_sources(suite, examples)
    summaries = summarise(samples, eval_systems(config, grounded))
    header = {
        "prompts": len(examples), "draft model": draft_model, "dtype": dtype,
        "refiner": refiner or f"shipped default ({DEFAULT_REFINER})", "strength": refine.strength,
        "select": refine.select, "edit threshold": refine.edit_threshold, "min change confidence": refine.min_change_confidence,
        "verified": f"window {refine.verify_window}, refiner weight {refine.verify_weight:g} (all hybrid-K rows)",
        "max new tokens": suite.max_new_tokens,
        **({"grounded": f"{GROUNDED.name}: select unsupported ({', '.join(refine.ground_kinds)}), {refine.ground_candidates} source copies "
                        f"per span, ground weight {refine.ground_weight:g}, verified"} if grounded and config.grounded else {}),
        "wall-clock of the whole evaluation (s)": round(time.perf_counter() - started, 1),
    }
    if validate_metrics:
        header["metric validations"] = metric_validations(suite.task)
    paths = write_report(folder, suite.name, samples, summaries, header)
    saved.finish()
    return paths, verdicts(summaries)
