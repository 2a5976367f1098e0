"""Click options made from config fields (hybrid.config), so that a setting's flag, default, range, choices and help
are declared once, on the field, and every command that takes it shows the same thing."""

from __future__ import annotations

from dataclasses import MISSING, fields

import click


def _param_type(f, default):
    meta = f.metadata
    if meta["choices"] is not None and not isinstance(default, tuple):
        return click.Choice(meta["choices"])
    if meta["low"] is not None or meta["high"] is not None:
        if isinstance(meta["low"], int) and isinstance(meta["high"], int):
            return click.IntRange(meta["low"], meta["high"], min_open=meta["low_open"], max_open=meta["high_open"])
        return click.FloatRange(meta["low"], meta["high"], min_open=meta["low_open"], max_open=meta["high_open"])
    if f.name == "seed":
        return int
    return None


def _option(f):
    default = f.default if f.default is not MISSING else f.default_factory()
    flag = "--" + (f.metadata["flag"] or f.name.replace("_", "-"))
    shown = default is not None and default != ()
    if isinstance(default, bool):
        return click.option(f"{flag}/--no-{flag[2:]}", f.name, default=default, show_default=True, help=f.metadata["help"])
    if isinstance(default, tuple) and f.metadata["choices"] is not None:  # several choices: comma-separated
        return click.option(flag, f.name, default=",".join(default), show_default=True, callback=_choices(f),
                            help=f.metadata["help"])
    if isinstance(default, tuple):
        return click.option(flag, f.name, multiple=True, help=f.metadata["help"])
    return click.option(flag, f.name, type=_param_type(f, default), default=default, show_default=shown, help=f.metadata["help"])


def _choices(f):
    def parse(ctx, param, value):
        chosen = tuple(part.strip() for part in value.split(",") if part.strip())
        for part in chosen:
            if part not in f.metadata["choices"]:
                raise click.BadParameter(f"unknown kind {part!r}: choose from {', '.join(f.metadata['choices'])}")
        return chosen

    return parse


def config_options(cls, skip: tuple[str, ...] = (), only: tuple[str, ...] | None = None):
    """A decorator adding one option per CLI field of the config class `cls` (fields with cli=False and `skip` left out;
    with `only`, just those fields)."""
    chosen = [f for f in fields(cls) if f.metadata.get("cli", False) and f.name not in skip and (only is None or f.name in only)]

    def decorate(command):
        for f in reversed(chosen):
            command = _option(f)(command)
        return command

    return decorate


def config_from(cls, options: dict, **given):
    """An instance of `cls` from a command's options (its own CLI fields are taken out of `options`), plus `given`."""
    names = {f.name for f in fields(cls) if f.metadata.get("cli", False)}
    values = {name: options.pop(name) for name in list(options) if name in names}
    values.update(given)
    return cls(**values)


def input_file_options(command):
    """`hybrid generate`'s options for a file of prompts (hybrid.batch_generate)."""
    options = [click.option("--input", "input_file", help='A JSON-lines file of prompts ({"prompt": ..., optional "source" and '
                            "settings by their Python names}); needs --output."),
               click.option("--output", "output_file", help="With --input: the JSON-lines file of results; a rerun resumes it."),
               click.option("--batch-size", type=click.IntRange(1, 256), default=8, show_default=True, help="With --input: prompts per batch.")]
    for option in reversed(options):
        command = option(command)
    return command
