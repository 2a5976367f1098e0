"""Results are dataclasses; `to_dict()` turns one into plain JSON-ready data (tuples become lists).

GenerationResult is what one generation returns: the texts, token ids, per-stage timings and, when asked, every step's
changes and every verified proposal. `result_for_row` builds one row's result from the pipeline's draft and sampler
output."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


def _plain(value):
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


class Result:
    """Base of the result dataclasses: `to_dict()` for JSON and for `evaluate` metric outputs."""

    def to_dict(self) -> dict:
        return _plain(asdict(self))


@dataclass
class StageTimings:
    load_s: float = 0.0
    draft_s: float = 0.0
    draft_prefill_s: float = 0.0
    draft_decode_s: float = 0.0
    draft_tokens_per_s: float = 0.0
    refine_s: float = 0.0
    total_s: float = 0.0


@dataclass
class TraceStep:
    step: int
    changes: list[dict]  # {"position", "old", "new", "old_id", "new_id", "confidence"}: decoded pieces and their token ids


@dataclass
class GenerationResult(Result):
    prompt: str
    text: str  # the final text (the draft itself in draft mode)
    draft_text: str | None  # None in diffusion mode
    token_ids: list[int]
    draft_token_ids: list[int]
    mode: str
    refine_steps: int  # requested
    steps_run: int
    edits_per_step: list[int]
    timings: StageTimings = field(default_factory=StageTimings)
    trace: list[TraceStep] | None = None
    # With trace: every group of changes the refiner proposed, its verification score and whether it was kept.
    proposals: list[dict] | None = None
    # How drafting went (hybrid.drafting.decode_loop.SpeculationStats): the proposal source ("off": plain decoding),
    # decode passes, tokens per pass, proposals offered and kept per block position; with trace, each pass's proposals.
    # Shared by a batch's rows.
    speculation: dict | None = None


def result_for_row(tokenizer, mask_id: int | None, row: int, prompt: str, draft, final_ids: list[int], output, mode: str,
                   sampler_config, timings: StageTimings) -> GenerationResult:
    """Row `row`'s GenerationResult. `output` None: the draft is the text (no refine step ran)."""
    draft_ids = draft.token_ids[row, : draft.lengths[row]].tolist() if draft is not None else []
    text = draft.texts[row] if (output is None and draft is not None) else tokenizer.decode(final_ids, skip_special_tokens=True)
    traced = output is not None and sampler_config.trace
    return GenerationResult(
        prompt=prompt, text=text, draft_text=draft.texts[row] if draft is not None else None, token_ids=final_ids,
        draft_token_ids=draft_ids, mode=mode if sampler_config.steps else "draft", refine_steps=sampler_config.steps,
        steps_run=output.steps_run if output else 0, edits_per_step=list(output.edits_per_step) if output else [],
        timings=timings, trace=_trace(tokenizer, mask_id, output, row) if traced else None,
        proposals=_proposals(tokenizer, output, row) if traced else None,
        speculation=(draft.speculation.to_dict(with_log=sampler_config.trace)
                     if draft is not None and draft.speculation is not None else None),
    )


def _proposals(tokenizer, output, row) -> list[dict]:
    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=False)  # noqa: E731
    return [{"start": p.start, "end": p.end, "old": decode(p.old_ids), "new": decode(p.new_ids), "old_ids": p.old_ids, "new_ids": p.new_ids,
             "drafter_gain": round(p.drafter_gain, 4), "refiner_gain": round(p.refiner_gain, 4),
             "grounding_gain": p.grounding_gain, "origin": p.origin, "score": round(p.score, 4),
             "accepted": p.accepted} for p in output.proposals if p.row == row]


def _trace(tokenizer, mask_id, output, row) -> list[TraceStep]:
    def piece(token_id: int) -> str:
        return "[MASK]" if token_id == mask_id else tokenizer.decode([int(token_id)], skip_special_tokens=False)

    return [TraceStep(index + 1, [{"position": int(p), "old": piece(o), "new": piece(n), "old_id": int(o), "new_id": int(n),
                                   "confidence": round(float(c), 4)} for p, o, n, c in per_row[row]])
            for index, per_row in enumerate(output.trace)]
