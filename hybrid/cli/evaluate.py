"""`hybrid eval`: draft only, diffusion only and hybrid scored on a suite's prompts in one run."""

from __future__ import annotations

import click

from hybrid.cli.options import config_from, config_options
from hybrid.config import DTYPE_CHOICES, DraftConfig, SamplerConfig


@click.command(name="eval")
@click.argument("suite")
@click.option("--limit", type=click.IntRange(1, 100000), default=None, help="Only the first N prompts (a quick look).")
@click.option("--steps", default="1,2,4,8,16", show_default=True, help="Comma-separated refine-step counts for the hybrid systems.")
@click.option("--diffusion-steps", type=click.IntRange(1, 256), default=8, show_default=True)
@config_options(SamplerConfig, skip=("steps",))
@config_options(DraftConfig, only=("speculate",))
@click.option("--draft-model", default="smollm2-135m", show_default=True)
@click.option("--refiner", default=None, help="Refiner folder or shipped name; default the shipped general-4-layers.")
@click.option("--dtype", type=click.Choice(DTYPE_CHOICES), default="float32", show_default=True, help="auto: bfloat16 where the hardware multiplies it natively, else float32.")
@click.option("--batch-size", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--no-judge", is_flag=True, help="Skip perplexity under the judge LM (Gemma-3-270m, ~1 min to load the first time).")
@click.option("--no-encoders", is_flag=True, help="Skip the MiniLM metrics (coherence, BERTScore, consistency classifier).")
@click.option("--validate", "validate_metrics", is_flag=True, help="Also measure and report the metric validations (judge, grounding, classifier).")
@click.option("--output", type=click.Path(file_okay=False), default=None, help="Report folder (default evals/reports/SUITE).")
@click.option("--report-only", is_flag=True, help="Generate nothing: write report.md again from the report folder's results.json.")
def eval_command(suite, limit, steps, diffusion_steps, draft_model, refiner, dtype, batch_size, no_judge, no_encoders, validate_metrics,
                 output, report_only, **settings):
    """Score draft only, diffusion only and hybrid (several K) on SUITE's prompts, in one run.

    SUITE is a name under evals/suites/ (summarize, continue, facts), `all` for every suite there, or the path of
    your own suite YAML. Writes results.json (every sample and score), report.md and quality_vs_time.png into
    evals/reports/SUITE/ (or --output).

    \b
    hybrid eval facts --limit 20
    hybrid eval evals/suites/my_suite.yaml --steps 4,8
    """
    from pathlib import Path

    from hybrid.evaluation.harness.evaluate_suite import report_folder, run_suite
    from hybrid.evaluation.harness.runner import EvalConfig
    from hybrid.evaluation.harness.suite import SUITES_DIR

    try:
        hybrid_steps = [int(x) for x in steps.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {steps!r}", param_hint="--steps")
    if suite == "all" and output:
        raise click.BadParameter("with `all`, each suite writes to evals/reports/SUITE; drop --output", param_hint="--output")
    names = sorted(p.stem for p in SUITES_DIR.glob("*.yaml")) if suite == "all" else [suite]
    if report_only:
        from hybrid.evaluation.harness.report import rerender

        for name in names:
            click.echo(f"wrote {rerender(Path(output) if output else report_folder(name))}")
        return
    config = EvalConfig(refine=config_from(SamplerConfig, settings), draft=config_from(DraftConfig, settings), hybrid_steps=hybrid_steps,
                        diffusion_steps=diffusion_steps,
                        batch_size=batch_size, judge=not no_judge, encoders=not no_encoders)
    for name in names:
        paths, _ = run_suite(name, config, limit=limit, draft_model=draft_model, refiner=refiner, dtype=dtype,
                             validate_metrics=validate_metrics, output=Path(output) if output else None)
        if paths is not None:  # the main process (the others of an `accelerate launch` only generate)
            click.echo(paths["markdown"].read_text() + f"\nwrote {paths['json']}, {paths['markdown']}, {paths['plot']}")
