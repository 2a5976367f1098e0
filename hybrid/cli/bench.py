"""`hybrid bench`: draft only, diffusion only and hybrid timed side by side (or the drafting bench), as ratios."""

from __future__ import annotations

import click

from hybrid.cli.options import config_options
from hybrid.config import DTYPE_NAMES, DraftConfig


@click.command()
@click.option("--preset", type=click.Choice(["quick", "full", "drafting"]), default="quick", show_default=True, help="quick: 128 tokens, K=8, batch 1, float32 and bfloat16 (a few minutes); full: the whole sweep; drafting: HF generate, HF prompt lookup, plain and speculative drafting and the default hybrid on the suites' prompts.")
@click.option("--lengths", help="Comma-separated new-token lengths, overriding the preset (e.g. 32,128,512).")
@click.option("--steps", help="Comma-separated refine step counts (e.g. 1,4,8,16).")
@click.option("--batch-sizes", help="Comma-separated batch sizes (e.g. 1,8).")
@click.option("--dtypes", help="Comma-separated dtypes (float32,bfloat16).")
@click.option("--repeats", type=click.IntRange(1, 50), default=None, help="Timed repeats per cell (median reported).")
@click.option("--refiner", default=None, help="Refiner folder; default the shipped general-4-layers (an untrained one if none is installed).")
@click.option("--no-memory", is_flag=True, help="Skip the peak-memory probe of `hybrid generate`.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto (the GPU when there is one).")
@config_options(DraftConfig, only=("speculate",))
@click.option("--block-drafter", default=None, help="With --preset drafting: also time speculation from this block drafter (folder or "
              "the shipped one's name), alone (diffusion) and after lookup (both).")
@click.option("--per-suite", type=click.IntRange(1, 1000), default=4, show_default=True, help="With --preset drafting: prompts of each suite.")
@click.option("--output", type=click.Path(file_okay=False), default="evals/bench/latest", show_default=True, help="Folder for bench.json, bench.txt and bench.png (drafting: drafting.json, drafting.md).")
def bench(preset, lengths, steps, batch_sizes, dtypes, repeats, refiner, no_memory, device, speculate, block_drafter, per_suite, output):
    """Time draft only, diffusion only and hybrid side by side; print every ratio to draft only.

    \b
    hybrid bench --preset quick
    hybrid bench --preset full --output evals/bench/cpu-full
    hybrid bench --preset drafting --dtypes float32 --per-suite 3 --output evals/bench/drafting-cpu
    """
    import dataclasses
    from pathlib import Path

    from hybrid.bench.run import PRESETS, run_bench
    from hybrid.bench.report import format_table, write_report

    def numbers(text, name):
        try:
            return [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise click.BadParameter(f"expected comma-separated integers, got {text!r}", param_hint=name)

    config = dataclasses.replace(PRESETS["quick" if preset == "drafting" else preset], refiner=refiner, measure_memory=not no_memory, device=device,
                                 speculate=speculate)
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
        from hybrid.bench.drafting import SYSTEMS, format_markdown, run_drafting_bench

        systems = list(SYSTEMS) + (["diffusion", "both"] if block_drafter else [])
        reports = run_drafting_bench(config.dtypes, config.lengths[0], per_suite, systems, Path(output), refiner=refiner,
                                     block_drafter=block_drafter)
        click.echo(format_markdown(reports) + f"\nwrote {Path(output) / 'drafting.json'}, {Path(output) / 'drafting.md'}")
        return
    if repeats:
        config.repeats = repeats
    report = run_bench(config)
    paths = write_report(report, Path(output))
    click.echo(format_table(report))
    click.echo(f"\nwrote {paths['json']}, {paths['table']}, {paths['plot']}")
