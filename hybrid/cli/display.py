"""Terminal rendering of a refinement: the draft beside the refined text, changed tokens highlighted."""

from __future__ import annotations

import shutil
import sys

import click


def highlight_changes(draft_ids: list[int], final_ids: list[int], tokenizer) -> str:
    """The final text with every token that differs from the draft at the same canvas position in bold green."""
    pieces = []
    for position, token in enumerate(final_ids):
        piece = tokenizer.decode([token], skip_special_tokens=True)
        changed = position >= len(draft_ids) or draft_ids[position] != token
        pieces.append(click.style(piece, fg="green", bold=True, underline=True) if changed else piece)
    return "".join(pieces)


def render_trace(result, tokenizer) -> str:
    lines = [click.style("draft:   ", bold=True) + (result.draft_text if result.draft_text is not None else "(none: diffusion mode)")]
    lines.append(click.style("refined: ", bold=True) + highlight_changes(result.draft_token_ids, result.token_ids, tokenizer))
    lines.append(f"steps run: {result.steps_run} of {result.refine_steps}; edits per step: {result.edits_per_step}")
    for step in result.trace or []:
        shown = ", ".join(f"{c['position']}: {_shown(c['old'])} -> {_shown(c['new'])} ({c['confidence']:.2f})" for c in step.changes[:24])
        more = f" ... +{len(step.changes) - 24} more" if len(step.changes) > 24 else ""
        lines.append(f"  step {step.step}: {len(step.changes)} changes  {shown}{more}")
    if result.proposals is not None:
        kept = sum(p["accepted"] for p in result.proposals)
        lines.append(f"verified: {kept} of {len(result.proposals)} proposed changes kept (score = drafter gain + weight x refiner gain)")
        for p in result.proposals:
            verdict = click.style("kept", fg="green", bold=True) if p["accepted"] else click.style("rejected", fg="red")
            lines.append(f"  {p['start']}-{p['end']}: {p['old']!r} -> {p['new']!r}  drafter {p['drafter_gain']:+.2f}, "
                         f"refiner {p['refiner_gain']:+.2f}, score {p['score']:+.2f}  {verdict}")
    if result.speculation is not None and result.speculation["source"] != "off":
        s = result.speculation
        lines.append(f"drafting: {s['source']} speculation, {s['tokens_per_pass']:.2f} tokens per pass; the drafter kept "
                     f"{s['accepted']} of {s['proposed']} proposed tokens (by block position: "
                     + ", ".join(f"{k}/{o}" for k, o in zip(s["kept_per_position"], s["offered_per_position"])) + ")")
    for index, p in enumerate((result.speculation or {}).get("proposals", [])[:40]):
        pieces = [tokenizer.decode([i]) for i in p["ids"]]
        kept = click.style("".join(pieces[: p["kept"]]), fg="green", bold=True)
        rejected = click.style("".join(pieces[p["kept"]:]), fg="red", strikethrough=True)
        lines.append(f"  proposal {index + 1}: {p['kept']} of {len(pieces)} kept  {kept!s}{rejected!s}")
    t = result.timings
    lines.append(f"time: draft {t.draft_s:.2f}s ({t.draft_tokens_per_s:.1f} tok/s), refine {t.refine_s:.2f}s, total {t.total_s:.2f}s")
    return "\n".join(lines)


def _shown(piece: str) -> str:
    """A decoded piece as it reads, quoted so that spaces and line breaks show: ' of', '\\n'; the mask stays [MASK]."""
    return piece if piece == "[MASK]" else repr(piece)


def stream_to_terminal(pipe, prompt: str, **settings):
    """Echo the draft as it is written; then, in a terminal, erase it and print the refined text in its place (elsewhere,
    print the refined text on a new line when it differs). Returns the GenerationResult."""
    printed = ""
    for event in pipe.stream(prompt, **settings):
        if event.kind == "draft":
            click.echo(event.text, nl=False)
            sys.stdout.flush()
            printed += event.text
        elif event.kind == "done":
            result = event.result
    if sys.stdout.isatty() and result.text != printed:
        width = max(1, shutil.get_terminal_size().columns)
        rows = sum(max(1, -(-len(line) // width)) for line in printed.split("\n"))
        click.echo("\r" + (f"\x1b[{rows - 1}A" if rows > 1 else "") + "\x1b[J" + result.text)
    else:
        click.echo("" if result.text == printed else "\n" + result.text)
    return result
