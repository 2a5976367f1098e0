"""`hybrid consistency train [options]`: the click command (it prints; the library logs)."""

from __future__ import annotations

from pathlib import Path

import click

from hybrid.consistency.options import TrainingOptions

DEFAULTS = TrainingOptions()


@click.group()
def consistency() -> None:
    """The factual-consistency classifier that `hybrid eval` scores summaries with."""


@consistency.command()
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), default=DEFAULTS.output, show_default=True,
              help="Folder to write the classifier to (the default replaces the shipped one).")
@click.option("--sentences", type=click.IntRange(1), default=DEFAULTS.sentences, show_default=True, help="Training sentences (2 pairs each).")
@click.option("--plain-weight", type=click.IntRange(1), default=DEFAULTS.plain_weight, show_default=True, help="Times each plain-English sentence is drawn.")
@click.option("--in-window-share", type=click.FloatRange(0, 1), default=DEFAULTS.in_window_share, show_default=True,
              help="Share of entity/number swaps whose replacement comes from the source window itself.")
@click.option("--epochs", type=click.FloatRange(0, min_open=True), default=DEFAULTS.epochs, show_default=True)
@click.option("--minutes", type=click.FloatRange(0, min_open=True), default=DEFAULTS.minutes, show_default=True, help="Stop fine-tuning after this long.")
@click.option("--batch-size", type=click.IntRange(1), default=DEFAULTS.batch_size, show_default=True)
@click.option("--lr-layers", type=float, default=DEFAULTS.lr_layers, show_default=True)
@click.option("--lr-head", type=float, default=DEFAULTS.lr_head, show_default=True)
@click.option("--held-out-per-kind", type=click.IntRange(1), default=DEFAULTS.held_out_per_kind, show_default=True)
@click.option("--calibration-share", type=click.FloatRange(0, 1), default=DEFAULTS.calibration_share, show_default=True,
              help="Share of training pairs kept aside to choose the decision threshold.")
@click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True)
def train(**options) -> None:
    """Train the classifier on synthetic corruptions of ACLSum and plain-English sentences (CPU, about 11 minutes
    with the defaults, which made the shipped checkpoints/consistency). `hybrid -v consistency train` logs progress.

    \b
    hybrid consistency train --output runs/consistency
    hybrid consistency train --sentences 200 --minutes 0.5 --output runs/consistency-quick
    """
    from hybrid.consistency.training import train_classifier

    result = train_classifier(TrainingOptions(**options))
    figures = result.evaluation
    click.echo(f"held-out balanced accuracy {figures.balanced_accuracy:.3f} (AUC {figures.roc_auc:.3f}) on {figures.pairs} pairs, "
               f"threshold {figures.threshold:.2f}")
    click.echo(f"classifier written to {result.output}")
