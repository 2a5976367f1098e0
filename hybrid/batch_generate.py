"""`hybrid generate --input prompts.jsonl --output results.jsonl`: generate for every prompt of a file, resumably.

Input: one JSON object a line, {"prompt": ..., "source": ... (optional: grounds the text in it, as --source does),
and any of the pipeline's keyword settings (max_new_tokens, refine_steps, strength, mode, ...)}, which override the
command line's for that prompt. Every line is
checked before a model loads; a bad one is one error that names its line.

Output: one JSON object a line, in input order: {"line": N (its line in the input), "prompt", "text", "draft_text", ...,
"timings"} (GenerationResult.to_dict). Results are appended whole as each batch finishes (hybrid.atomic), so a
rerun on the same output skips the prompts already there (checked by line and prompt) and a torn last line from a
crash is cut off and done again. Batches are consecutive prompts with the same settings, fixed by the input alone: a
resumed run, and a run under `accelerate launch` (batches shared out to the processes, hybrid.processes), make the
same batches and so the same texts as one uninterrupted process.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from hybrid.config import MODES, configs_from
from hybrid.errors import HybridError
from hybrid.processes import is_main_process, process_device, sharded_rounds, wait_for_everyone
from hybrid.atomic import append_records, read_records

log = logging.getLogger(__name__)
LINE_KEYS = ("prompt", "source", "mode")  # besides the settings


@dataclass
class PromptLine:
    line: int  # 1-based, in the input file
    prompt: str
    source: str | None = None
    mode: str | None = None
    settings: dict = field(default_factory=dict)

    @property
    def group(self) -> str:
        """Lines of one batch share this: the same mode and settings, and a source or none (a source means grounding)."""
        return json.dumps([self.mode, self.source is not None, self.settings], sort_keys=True)


@dataclass
class BatchRun:
    output: Path
    prompts: int
    skipped: int  # already in the output from an earlier run
    written: int

    def summary(self) -> str:
        return f"wrote {self.written} results to {self.output} ({self.skipped} of {self.prompts} were there already)"


def read_prompts(path: str | Path, draft_config, refine_config) -> list[PromptLine]:
    """Every prompt line of `path`, each checked (settings against the configs they override)."""
    try:
        with open(path, encoding="utf-8") as handle:
            raw_lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise HybridError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}")
    lines = [_parse(raw, number, draft_config, refine_config, path) for number, raw in enumerate(raw_lines, 1) if raw.strip()]
    if not lines:
        raise HybridError(f"{path} holds no prompts: write one JSON object a line, e.g. {{\"prompt\": \"The history of Rome\"}}")
    return lines


def _parse(raw: str, number: int, draft_config, refine_config, path) -> PromptLine:
    def bad(message):
        return HybridError(f"{path} line {number}: {message}")

    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise bad(f"not JSON ({exc.msg})")
    if not isinstance(data, dict):
        raise bad('not a JSON object: write {"prompt": "..."}')
    prompt, source, mode = data.get("prompt"), data.get("source"), data.get("mode")
    if not isinstance(prompt, str) or not prompt.strip():
        raise bad('no "prompt": each line needs a non-empty "prompt" string')
    if source is not None and not isinstance(source, str):
        raise bad('"source" must be a string')
    if mode is not None and mode not in MODES:
        raise bad(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
    settings = {key: value for key, value in data.items() if key not in LINE_KEYS}
    try:
        draft, refine = configs_from(settings, draft_config, refine_config)
        draft.validate(), refine.validate()
    except (HybridError, TypeError) as exc:
        raise bad(str(exc))
    return PromptLine(number, prompt, source, mode, settings)


def make_batches(lines: list[PromptLine], batch_size: int) -> list[list[PromptLine]]:
    """Consecutive lines with the same settings, at most `batch_size` a batch."""
    batches: list[list[PromptLine]] = []
    for line in lines:
        if batches and len(batches[-1]) < batch_size and batches[-1][0].group == line.group:
            batches[-1].append(line)
        else:
            batches.append([line])
    return batches


def done_lines(output: Path, lines: list[PromptLine]) -> int:
    """How many of `lines` the output holds already (a prefix, in order); a torn last line is cut off (main process)."""
    records = read_records(output, repair=is_main_process())
    if len(records) > len(lines):
        raise HybridError(f"{output} holds {len(records)} results but the input has {len(lines)} prompts: give another --output")
    for number, (record, line) in enumerate(zip(records, lines), 1):
        if record.get("line") != line.line or record.get("prompt") != line.prompt:
            raise HybridError(f"{output} line {number} is not the result of input line {line.line} (another input, or the input "
                              "changed): give another --output or delete it")
    return len(records)


def generate_file(input_path: str, output_path: str | None, batch_size: int, draft_config, refine_config, mode: str = "hybrid", *,
                  draft_model: str, refiner: str | None, dtype: str = "float32", use_chat_template: bool = True,
                  device: str = "cpu", progress: bool = True, block_drafter: str | None = None,
                  lookup_store: str | None = "auto") -> BatchRun | None:
    """Generate for every prompt of `input_path` into `output_path` (see the module docstring). Returns the run's
    figures on the main process, None on the others. `block_drafter` and `lookup_store` as in
    HybridPipeline.from_pretrained (batches of one prompt speculate; larger ones decode plainly)."""
    from hybrid.pipeline import HybridPipeline

    if output_path is None:
        raise HybridError("--input needs --output: the JSON-lines file the results go to")
    lines = read_prompts(input_path, draft_config, refine_config)
    output = Path(output_path)
    skipped = done_lines(output, lines)
    wait_for_everyone()  # nobody appends before everyone has read what is there
    done = {line.line for line in lines[:skipped]}
    # a batch the output holds only part of (a crash between its lines) runs again whole: the same batch, the same texts
    pending = [batch for batch in make_batches(lines, batch_size) if any(line.line not in done for line in batch)]
    run = BatchRun(output, len(lines), skipped, 0)
    if not pending:
        return run if is_main_process() else None
    refines = any(_refines(batch[0], draft_config, refine_config, mode) for batch in pending)
    pipe = HybridPipeline.from_pretrained(draft_model, refiner if refines else "none", dtype, use_chat_template, process_device(device),
                                          block_drafter=block_drafter, lookup_store=lookup_store)
    bar = tqdm(total=len(lines), initial=skipped, desc="generate", unit="prompt", disable=not (progress and is_main_process()))
    for records in sharded_rounds(pending, lambda batch: _generate(pipe, batch, draft_config, refine_config, mode, done, input_path)):
        if is_main_process():
            append_records(output, records)
        run.written += len(records)
        bar.update(len(records))
    bar.close()
    return run if is_main_process() else None


def _refines(line: PromptLine, draft_config, refine_config, mode: str) -> bool:
    _, refine = configs_from(line.settings, draft_config, refine_config)
    return (line.mode or mode) != "draft" and refine.steps != 0


def _generate(pipe, batch: list[PromptLine], draft_config, refine_config, mode: str, done: set[int], input_path) -> list[dict]:
    """The records of the batch's lines not yet in the output. A bad request is pinned to its line by running the
    batch's prompts one at a time (those results are not kept: the batch is redone whole next time)."""
    first = batch[0]
    draft, refine = configs_from(first.settings, draft_config, refine_config)
    mode = first.mode or mode
    mode = mode if pipe.refiner is not None else "draft"

    def run(lines):
        return pipe([line.prompt for line in lines], draft_config=draft, refine_config=refine, mode=mode,
                    source=[line.source for line in lines] if first.source is not None else None)

    try:
        results = run(batch)
    except HybridError as exc:
        for line in batch if len(batch) > 1 else []:
            try:
                run([line])
            except HybridError as alone:
                raise HybridError(f"{input_path} line {line.line}: {alone}") from alone
        where = f"line {first.line}" if len(batch) == 1 else f"lines {first.line}-{batch[-1].line}"
        raise HybridError(f"{input_path} {where}: {exc}") from exc
    return [{"line": line.line, **result.to_dict()} for line, result in zip(batch, results) if line.line not in done]
