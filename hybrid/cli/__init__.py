"""The `hybrid` command line, one module per command. Only the CLI prints; the library logs."""

from __future__ import annotations

import logging
import os
import sys

import click

from hybrid import __version__
from hybrid.cli.bench import bench
from hybrid.cli.evaluate import eval_command
from hybrid.cli.generate import generate
from hybrid.cli.lm_eval import lm_eval_command
from hybrid.consistency.command import consistency
from hybrid.errors import HybridError
from hybrid.finetune.command import finetune
from hybrid.finetune.recipes_command import recipes

# What `hybrid --help` lists, in this order, each once with its line.
COMMANDS = [
    (generate, "write text for a prompt: draft, diffusion or hybrid"),
    (finetune, "train a refiner from a YAML recipe"),
    (recipes, "list, copy and check the shipped recipes"),
    (eval_command, "score draft, diffusion and hybrid on a suite"),
    (bench, "time draft, diffusion and hybrid side by side"),
    (lm_eval_command, "run lm-evaluation-harness tasks on the hybrid"),
    (consistency, "train the factual-consistency classifier"),
]


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

    def list_commands(self, ctx) -> list[str]:
        return list(self.commands)  # in the order they were added, not sorted


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hybrid")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details to stderr.")
def cli(verbose: bool) -> None:
    """Draft text with an autoregressive LM, then refine it with a diffusion refiner."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


for command, line in COMMANDS:
    command.short_help = line
    cli.add_command(command)


def main() -> None:
    cli()
