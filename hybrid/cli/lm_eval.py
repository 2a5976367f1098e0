"""`hybrid lm-eval`: lm-evaluation-harness with the `hybrid` model registered and the shipped local tasks included."""

from __future__ import annotations

import sys

import click

from hybrid.errors import HybridError


@click.command(name="lm-eval", context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def lm_eval_command(args):
    """Run lm-evaluation-harness with the `hybrid` model registered (needs `pip install hybrid[lm-eval]`).

    \b
    hybrid lm-eval run --model hybrid --model_args refine_steps=2 --tasks hybrid_facts --limit 10
    (the shipped local tasks under evals/lm_eval are included unless you pass --include_path)
    """
    try:
        import hybrid.evaluation.lm_eval_model  # noqa: F401  (registers the model)
        from lm_eval.__main__ import cli_evaluate
    except ImportError as exc:
        raise HybridError(f"lm-eval is not installed ({exc.name}): pip install 'hybrid[lm-eval]'") from exc
    from hybrid.resources import shipped

    args = list(args)
    if args and args[0] == "run" and "--include_path" not in args:  # the shipped local tasks (hybrid_facts), from anywhere
        args += ["--include_path", str(shipped("evals/lm_eval"))]
    sys.argv = ["lm-eval", *args]
    cli_evaluate()
