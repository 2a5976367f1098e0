"""`hybrid generate`: text for one prompt (printed, as JSON, streamed or traced), or for a file of prompts."""

from __future__ import annotations

import json
import sys

import click

from hybrid.cli.options import config_from, config_options, input_file_options
from hybrid.config import DTYPE_CHOICES, MODES, NO_REFINER, DraftConfig, SamplerConfig
from hybrid.errors import HybridError

MAX_PROMPT_CHARS = 200_000


def _block_drafter(given: str | None, draft_config: DraftConfig) -> str | None:
    """The block drafter to load: the one given, else the shipped one where the speculate setting needs one (a clear
    error when none is shipped), else none."""
    if given is None and draft_config.speculate in ("diffusion", "both"):
        return "block-drafter"
    return given


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


@click.command()
@click.argument("prompt", required=False)
@click.option("--file", "file", type=str, help="Read the prompt from this file ('-' or no PROMPT: standard input).")
@click.option("--draft-model", default="smollm2-135m", show_default=True, help="Alias, local folder or hub id of the autoregressive drafter.")
@click.option("--refiner", default=None, help="Refiner folder (from `hybrid finetune`) or shipped name; default: the shipped general-4-layers; 'none' for draft only.")
@click.option("--mode", type=click.Choice(MODES), default="hybrid", show_default=True, help="hybrid: refine a draft; draft: AR only; diffusion: refiner only from an all-mask canvas.")
@click.option("--source", "source_file", type=str, default=None, help="A file holding the source to ground the text in: the names and numbers it does not support are repaired from it (--select unsupported, unless you choose another --select). Without it, --select unsupported grounds in the prompt's text after its first blank line.")
@config_options(DraftConfig)
@config_options(SamplerConfig)
@click.option("--block-drafter", default=None, help="Block drafter folder (from `hybrid finetune recipes/block-drafter.yaml`) for --speculate diffusion or both; default: the shipped one, when there is one.")
@click.option("--lookup-store", default="auto", show_default=True, help="Drafted text that lookup speculation also reads (a folder from `hybrid finetune recipes/lookup-store.yaml`); auto: the shipped one when it fits the drafter's tokenizer; none: the prompt and text alone.")
@click.option("--dtype", type=click.Choice(DTYPE_CHOICES), default="float32", show_default=True, help="auto: bfloat16 where the hardware multiplies it natively, else float32.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto (the GPU when there is one).")
@click.option("--no-chat-template", is_flag=True, help="Feed the prompt as raw text even if the model has a chat template.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result, timings included, as JSON.")
@click.option("--show-trace", is_flag=True, help="Show the draft beside the refined text and every step's changes.")
@click.option("--stream", is_flag=True, help="Print the draft token by token as it is written, then redraw it as the refined text.")
@input_file_options
def generate(prompt, file, draft_model, refiner, mode, source_file, block_drafter, lookup_store, dtype, device, no_chat_template, as_json, show_trace, stream, input_file, output_file, batch_size, **settings):
    """Generate text for PROMPT.

    \b
    hybrid generate "The history of Rome" --refine-steps 0 --max-new-tokens 32 --json
    hybrid generate "The history of Rome" --refine-steps 8 --refiner runs/tiny --show-trace
    hybrid generate --file report.txt --select unsupported --refiner summarize
    hybrid generate --input prompts.jsonl --output results.jsonl --batch-size 8
    """
    from hybrid.cli.display import render_trace, stream_to_terminal
    from hybrid.refining.grounded import grounding_source
    from hybrid.pipeline import HybridPipeline
    from hybrid.refiner import resolve_refiner

    draft_config = config_from(DraftConfig, settings)
    refine_config = config_from(SamplerConfig, settings, temperature=draft_config.temperature, trace=show_trace)
    if input_file is not None or output_file is not None:  # a file of prompts (hybrid.batch_generate)
        if input_file is None or any(x not in (None, False) for x in (prompt, file, source_file, stream, show_trace, as_json)):
            raise click.UsageError("--output goes with --input, which takes no PROMPT, --file, --source, --stream, --show-trace or --json")
        from hybrid.batch_generate import generate_file
        run = generate_file(input_file, output_file, batch_size, draft_config, refine_config, mode, draft_model=draft_model, refiner=refiner,
                            dtype=dtype, use_chat_template=not no_chat_template, device=device,
                            block_drafter=_block_drafter(block_drafter, draft_config), lookup_store=lookup_store)
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
    pipe = HybridPipeline.from_pretrained(draft_model=draft_model, refiner=refiner, dtype=dtype, use_chat_template=not no_chat_template,
                                          device=device, block_drafter=_block_drafter(block_drafter, draft_config), lookup_store=lookup_store)
    run = (lambda text, **kw: stream_to_terminal(pipe, text, **kw)) if stream else pipe
    result = run(text, draft_config=draft_config, refine_config=refine_config, mode=mode if pipe.refiner is not None else "draft",
                 source=source)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    elif show_trace:
        click.echo(render_trace(result, pipe.tokenizer))
    elif not stream:
        click.echo(result.text)
