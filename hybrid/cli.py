"""The `hybrid` command line. Only this module prints; the library logs."""

from __future__ import annotations

import json
import logging
import os
import sys

import click

from hybrid import __version__
from hybrid.errors import HybridError
from hybrid.cli_options import config_from, config_options, input_file_options
from hybrid.config import DTYPE_CHOICES, DTYPE_NAMES, MODES, NO_REFINER, DraftConfig, SamplerConfig

MAX_PROMPT_CHARS = 200_000


def _read_prompt(prompt: str | None, file: str | None) -> str:
    if prompt is not None and file is not None:
        raise click.UsageError("give the prompt either as an argument or with --file, not both")
    if file is not None:
        try:
            with open(file, encoding="utf-8") as handle:
                text = handle.read(MAX_PROMPT_CHARS + 1)
        except (OSError, UnicodeDecodeError) as exc:
            raise click.BadParameter(f"cannot read {file}: {getattr(exc, 'strerror', None) or exc}", param_hint="--file")
    elif prompt is None or prompt == "-":
        if sys.stdin is None or (sys.stdin.isatty() and prompt is None):
            raise click.UsageError("no prompt: pass it as an argument, with --file, or on standard input")
        text = sys.stdin.read(MAX_PROMPT_CHARS + 1)
    else:
        text = prompt
    if len(text) > MAX_PROMPT_CHARS:
        raise click.UsageError(f"the prompt is longer than {MAX_PROMPT_CHARS} characters")
    if not text.strip():
        raise click.UsageError("the prompt is empty: give some text to continue")
    return text


class OneLineErrors(click.Group):
    """A group whose errors become one line on stderr and a non-zero exit, never a traceback.

    Exit codes: 2 for usage errors and user-caused problems (HybridError), 1 for anything unexpected
    (set HYBRID_DEBUG=1 to see its traceback), 130 for Ctrl-C.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except (click.exceptions.Abort, KeyboardInterrupt):
            click.echo("interrupted", err=True)
            sys.exit(130)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
        except HybridError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except Exception as exc:  # a bug, not the user's fault: still one line unless asked for more
            if os.environ.get("HYBRID_DEBUG"):
                raise
            click.echo(f"error: unexpected {type(exc).__name__}: {exc} (set HYBRID_DEBUG=1 for the traceback)", err=True)
            sys.exit(1)
        sys.exit(0)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hybrid")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details to stderr.")
def cli(verbose: bool) -> None:
    """Draft text with an autoregressive LM, then refine it with a diffusion refiner.

    \b
    generate  write text for a prompt (draft only, diffusion only, or hybrid)
    finetune  train a refiner from a YAML recipe (a file or a shipped name)
    recipes   list, copy and check the shipped recipes
    lm-eval   run lm-evaluation-harness tasks on the hybrid
    eval      score draft / diffusion / hybrid on a suite: factuality, coherence, cost
    bench     time draft / diffusion / hybrid side by side and print the ratios
    consistency  train the factual-consistency classifier the eval layer scores with
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@cli.command()
@click.argument("prompt", required=False)
@click.option("--file", "file", type=str, help="Read the prompt from this file ('-' or no PROMPT: standard input).")
@click.option("--draft-model", default="smollm2-135m", show_default=True, help="Alias, local folder or hub id of the autoregressive drafter.")
@click.option("--refiner", default=None, help="Refiner folder (from `hybrid finetune`) or shipped name; default: the shipped general-4-layers; 'none' for draft only.")
@click.option("--mode", type=click.Choice(MODES), default="hybrid", show_default=True, help="hybrid: refine a draft; draft: AR only; diffusion: refiner only from an all-mask canvas.")
@click.option("--source", "source_file", type=str, default=None, help="With --select unsupported: the file holding the source to ground against (default: the prompt's text after its first blank line).")
@config_options(DraftConfig)
@config_options(SamplerConfig)
@click.option("--dtype", type=click.Choice(DTYPE_CHOICES), default="float32", show_default=True, help="auto: bfloat16 where the hardware multiplies it natively, else float32.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto (the GPU when there is one).")
@click.option("--no-chat-template", is_flag=True, help="Feed the prompt as raw text even if the model has a chat template.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result, timings included, as JSON.")
@click.option("--show-trace", is_flag=True, help="Show the draft beside the refined text and every step's changes.")
@click.option("--stream", is_flag=True, help="Print the draft token by token as it is written, then redraw it as the refined text.")
@input_file_options
def generate(prompt, file, draft_model, refiner, mode, source_file, dtype, device, no_chat_template, as_json, show_trace, stream, input_file, output_file, batch_size, **settings):
    """Generate text for PROMPT.

    \b
    hybrid generate "The history of Rome" --refine-steps 0 --max-new-tokens 32 --json
    hybrid generate "The history of Rome" --refine-steps 8 --refiner runs/tiny --show-trace
    hybrid generate --file report.txt --select unsupported --refiner summarize
    hybrid generate --input prompts.jsonl --output results.jsonl --batch-size 8
    """
    from hybrid.display import render_trace, stream_to_terminal
    from hybrid.grounded import grounding_source
    from hybrid.pipeline import HybridPipeline
    from hybrid.refiner import resolve_refiner

    draft_config = config_from(DraftConfig, settings)
    refine_config = config_from(SamplerConfig, settings, temperature=draft_config.temperature, trace=show_trace)
    if input_file is not None or output_file is not None:  # a file of prompts (hybrid.batch_generate)
        if input_file is None or any(x not in (None, False) for x in (prompt, file, source_file, stream, show_trace, as_json)):
            raise click.UsageError("--output goes with --input, which takes no PROMPT, --file, --source, --stream, --show-trace or --json")
        from hybrid.batch_generate import generate_file
        run = generate_file(input_file, output_file, batch_size, draft_config, refine_config, mode, draft_model=draft_model, refiner=refiner,
                            dtype=dtype, use_chat_template=not no_chat_template, device=device)
        return click.echo(run.summary()) if run is not None else None  # None: not the main process of an `accelerate launch`
    text = _read_prompt(prompt, file)
    source = _read_prompt(None, source_file) if source_file is not None else None
    if refine_config.select == "unsupported":
        grounding_source(text, source)  # fails here, before any model loads, when there is nothing to ground against
    if stream and (as_json or show_trace):
        raise click.UsageError("--stream prints text as it comes: it does not combine with --json or --show-trace")
    if mode == "draft" or refine_config.steps == 0:
        refiner = "none"
    elif refine_config.steps is not None and refiner is None and resolve_refiner(None) is None:
        raise HybridError(NO_REFINER)
    pipe = HybridPipeline.from_pretrained(draft_model=draft_model, refiner=refiner, dtype=dtype, use_chat_template=not no_chat_template, device=device)
    run = (lambda text, **kw: stream_to_terminal(pipe, text, **kw)) if stream else pipe
    result = run(text, draft_config=draft_config, refine_config=refine_config, mode=mode if pipe.refiner is not None else "draft",
                 source=source)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    elif show_trace:
        click.echo(render_trace(result, pipe.tokenizer))
    elif not stream:
        click.echo(result.text)


@cli.command()
@click.option("--preset", type=click.Choice(["quick", "full", "drafting"]), default="quick", show_default=True, help="quick: 128 tokens, K=8, batch 1, float32 and bfloat16 (a few minutes); full: the whole sweep; drafting: HF generate, HF prompt lookup, plain and speculative drafting and the default hybrid on the suites' prompts.")
@click.option("--lengths", help="Comma-separated new-token lengths, overriding the preset (e.g. 32,128,512).")
@click.option("--steps", help="Comma-separated refine step counts (e.g. 1,4,8,16).")
@click.option("--batch-sizes", help="Comma-separated batch sizes (e.g. 1,8).")
@click.option("--dtypes", help="Comma-separated dtypes (float32,bfloat16).")
@click.option("--repeats", type=click.IntRange(1, 50), default=None, help="Timed repeats per cell (median reported).")
@click.option("--refiner", default=None, help="Refiner folder; default the shipped general-4-layers (an untrained one if none is installed).")
@click.option("--no-memory", is_flag=True, help="Skip the peak-memory probe of `hybrid generate`.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto (the GPU when there is one).")
@click.option("--per-suite", type=click.IntRange(1, 1000), default=4, show_default=True, help="With --preset drafting: prompts of each suite.")
@click.option("--output", type=click.Path(file_okay=False), default="evals/bench/latest", show_default=True, help="Folder for bench.json, bench.txt and bench.png (drafting: drafting.json, drafting.md).")
def bench(preset, lengths, steps, batch_sizes, dtypes, repeats, refiner, no_memory, device, per_suite, output):
    """Time draft only, diffusion only and hybrid side by side; print every ratio to draft only.

    \b
    hybrid bench --preset quick
    hybrid bench --preset full --output evals/bench/cpu-full
    hybrid bench --preset drafting --dtypes float32 --per-suite 3 --output evals/bench/drafting-cpu
    """
    import dataclasses
    from pathlib import Path

    from hybrid.bench import PRESETS, run_bench
    from hybrid.bench_report import format_table, write_report

    def numbers(text, name):
        try:
            return [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise click.BadParameter(f"expected comma-separated integers, got {text!r}", param_hint=name)

    config = dataclasses.replace(PRESETS["quick" if preset == "drafting" else preset], refiner=refiner, measure_memory=not no_memory, device=device)
    if lengths:
        config.lengths = numbers(lengths, "--lengths")
    if steps:
        config.steps = numbers(steps, "--steps")
    if batch_sizes:
        config.batch_sizes = numbers(batch_sizes, "--batch-sizes")
    if dtypes:
        config.dtypes = [d.strip() for d in dtypes.split(",")]
        for d in config.dtypes:
            if d not in DTYPE_NAMES:
                raise click.BadParameter(f"unknown dtype {d!r}: choose from {', '.join(DTYPE_NAMES)}", param_hint="--dtypes")
    if preset == "drafting":
        from hybrid.drafting.speed import SYSTEMS, format_markdown, run_drafting_bench

        reports = run_drafting_bench(config.dtypes, config.lengths[0], per_suite, list(SYSTEMS), Path(output), refiner=refiner)
        click.echo(format_markdown(reports) + f"\nwrote {Path(output) / 'drafting.json'}, {Path(output) / 'drafting.md'}")
        return
    if repeats:
        config.repeats = repeats
    report = run_bench(config)
    paths = write_report(report, Path(output))
    click.echo(format_table(report))
    click.echo(f"\nwrote {paths['json']}, {paths['table']}, {paths['plot']}")


@cli.command(name="eval")
@click.argument("suite")
@click.option("--limit", type=click.IntRange(1, 100000), default=None, help="Only the first N prompts (a quick look).")
@click.option("--steps", default="1,2,4,8,16", show_default=True, help="Comma-separated refine-step counts for the hybrid systems.")
@click.option("--diffusion-steps", type=click.IntRange(1, 256), default=8, show_default=True)
@config_options(SamplerConfig, skip=("steps",))
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
    config = EvalConfig(refine=config_from(SamplerConfig, settings), hybrid_steps=hybrid_steps, diffusion_steps=diffusion_steps,
                        batch_size=batch_size, judge=not no_judge, encoders=not no_encoders)
    for name in names:
        paths, _ = run_suite(name, config, limit=limit, draft_model=draft_model, refiner=refiner, dtype=dtype,
                             validate_metrics=validate_metrics, output=Path(output) if output else None)
        if paths is not None:  # the main process (the others of an `accelerate launch` only generate)
            click.echo(paths["markdown"].read_text() + f"\nwrote {paths['json']}, {paths['markdown']}, {paths['plot']}")


@cli.command(name="lm-eval", context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def lm_eval_command(args):
    """Run lm-evaluation-harness with the `hybrid` model registered (needs `pip install hybrid[lm-eval]`).

    \b
    hybrid lm-eval run --model hybrid --model_args refine_steps=2 --tasks hybrid_facts --limit 10
    (the shipped local tasks under evals/lm_eval are included unless you pass --include_path)
    """
    try:
        import hybrid.lm_eval_model  # noqa: F401  (registers the model)
        from lm_eval.__main__ import cli_evaluate
    except ImportError as exc:
        raise HybridError(f"lm-eval is not installed ({exc.name}): pip install 'hybrid[lm-eval]'") from exc
    from hybrid.resources import shipped

    args = list(args)
    if args and args[0] == "run" and "--include_path" not in args:  # the shipped local tasks (hybrid_facts), from anywhere
        args += ["--include_path", str(shipped("evals/lm_eval"))]
    sys.argv = ["lm-eval", *args]
    cli_evaluate()


from hybrid.finetune.command import finetune  # noqa: E402
from hybrid.finetune.recipes_command import recipes  # noqa: E402

cli.add_command(finetune)
cli.add_command(recipes)
from hybrid.consistency.command import consistency  # noqa: E402
cli.add_command(consistency)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
