"""The public API: draft with an autoregressive LM, then refine the draft with the diffusion refiner.

    from hybrid import HybridPipeline
    pipe = HybridPipeline.from_pretrained()            # embedded default drafter (+ shipped refiner when present)
    result = pipe("The history of Rome", max_new_tokens=64, refine_steps=8, seed=0)
    print(result.draft_text, "->", result.text)
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from contextlib import nullcontext
from dataclasses import replace

import torch

from hybrid.canvas import build_canvas, score_draft, slack_of, with_slack
from hybrid.config import NO_REFINER, DraftConfig, SamplerConfig, configs_from
from hybrid.draft import Draft, Drafter
from hybrid.errors import HybridError
from hybrid.generation_result import GenerationResult, StageTimings, result_for_row
from hybrid.grounded import grounding_source, source_restriction, unsupported_in_drafts
from hybrid.grounded_repair import repair_draft
from hybrid.logprobs import gather_tokens
from hybrid.models import DEFAULT_DRAFTER, load_causal_lm
from hybrid.refiner import Refiner, resolve_refiner
from hybrid.sampler import SamplerOutput, refine
from hybrid.verify import DrafterScorer, verify_changes

log = logging.getLogger(__name__)


def _serialised(method):
    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self.lock:
            return method(self, *args, **kwargs)
    return locked


class HybridPipeline:
    """Drafter + optional refiner sharing one backbone in memory.

    Thread-safe: `pipe(...)`, `draft`, `draft_from_text` and `stream` run one at a time under `pipe.lock` (the LoRA switch,
    layer-recording hooks and per-call refiner settings are shared). A call returns what it returns alone; an error
    (HybridError for a bad request) reaches only its caller. Calls are not merged into batches: pass a list of prompts.
    """

    def __init__(self, drafter: Drafter, refiner: Refiner | None = None, load_s: float = 0.0):
        self.drafter = drafter
        self.refiner = refiner
        self.load_s = load_s
        self.lock = threading.RLock()  # re-entrant: a callback may call the pipeline again from its own thread

    @classmethod
    def from_pretrained(cls, draft_model: str = DEFAULT_DRAFTER, refiner: str | None = None, dtype: str = "float32",
                        use_chat_template: bool = True, device: str = "cpu") -> "HybridPipeline":
        """`refiner`: None for the shipped default (if installed), 'none' for draft only, a shipped name or a folder."""
        start = time.perf_counter()
        model, tokenizer = load_causal_lm(draft_model, dtype, device)
        refiner_obj = None
        folder = None if refiner == "none" else resolve_refiner(refiner)
        if folder is not None:
            refiner_obj = Refiner.load(folder, model)
            refiner_obj.to(device=model.device, dtype=model.dtype).eval()
        drafter = Drafter(model, tokenizer, use_chat_template)
        load_s = time.perf_counter() - start
        drafter.load_s = load_s
        return cls(drafter, refiner_obj, load_s)

    @property
    def default_select(self) -> str:
        """The detection head's doubt where the refiner has one (it finds planted errors far better), else log-probs."""
        return "confidence" if self.refiner is not None and self.refiner.detection_head is not None else "logprob"

    @property
    def tokenizer(self):
        return self.drafter.tokenizer

    @_serialised
    def __call__(self, prompts: str | list[str], draft_config: DraftConfig | None = None, refine_config: SamplerConfig | None = None,
                 mode: str = "hybrid", draft: Draft | None = None, source: str | list[str] | None = None,
                 callback_on_step_end=None, callback_on_token=None, **settings):
        """Generate for one prompt (returns a GenerationResult) or a list (returns a list).

        The settings are the two stage configs (hybrid.config): `draft_config` for drafting and `refine_config` for
        refining, or the same fields as keyword arguments on top of them (`refine_steps` sets the refine config's
        `steps`; `temperature` sets both), e.g. `pipe(prompt, max_new_tokens=64, refine_steps=8, seed=0)`. Unset
        refine settings are resolved for this pipeline's refiner (SamplerConfig.resolved): the default K where a
        refiner is loaded, the detection head's doubt for `select="auto"` where it has one, else the draft's log-probs.
        `mode`: hybrid (refine a draft), draft (the draft only) or diffusion (refine an all-mask canvas).
        `draft` (from `pipe.draft(...)` on the same prompts) refines an existing draft instead of writing a new one,
        so that several refine settings can be compared on one draft; its drafting time still counts in the timings.
        `select="unsupported"` re-noises exactly the draft tokens of claims that the source does not support
        (hybrid.grounded): `source` (one per prompt), else each prompt's text after its first blank line.
        `callback_on_token(tokens)` sees each drafted token, `callback_on_step_end(step, canvas, changed)` each step.
        """
        single = isinstance(prompts, str)
        batch = [prompts] if single else list(prompts)
        draft_config, refine_config = configs_from(settings, draft_config, refine_config)
        sampler_config = refine_config.resolved(self.refiner is not None, self.default_select, mode)
        sources = None
        if sampler_config.select == "unsupported" and sampler_config.steps > 0:
            given = source if isinstance(source, list) else [source] * len(batch)
            if len(given) != len(batch):
                raise HybridError(f"got {len(given)} sources for {len(batch)} prompts: pass one source per prompt")
            sources = [grounding_source(p, s) for p, s in zip(batch, given)]
        keep = sampler_config.steps > 0 and mode == "hybrid" and (sampler_config.product or sampler_config.verify)
        draft_config = replace(draft_config, keep_distributions=draft_config.keep_distributions or keep).validate()
        if sampler_config.steps > 0 and self.refiner is None:
            raise HybridError(NO_REFINER)
        if self.refiner is not None:
            self.refiner.cache_refresh = sampler_config.cache_refresh
        if draft is not None and (mode == "diffusion" or len(draft.texts) != len(batch)):
            raise HybridError("a given draft must come from the same prompts, and diffusion mode takes none")
        hooks = {"on_token": callback_on_token, "on_step": callback_on_step_end}
        results = self._run(batch, draft_config, sampler_config, mode, draft, sources, hooks)
        return results[0] if single else results

    @_serialised
    def draft(self, prompts: str | list[str], draft_config: DraftConfig | None = None, **settings) -> Draft:
        """Only the autoregressive stage (the refiner's LoRA is off), for reuse through `pipe(..., draft=...)`; `settings`
        are DraftConfig fields."""
        # With a refiner, keep the drafter's distributions: refining this draft later then needs no extra drafter pass.
        config = replace(draft_config or DraftConfig(), **settings)
        config = replace(config, keep_distributions=config.keep_distributions or self.refiner is not None).validate()
        with self._drafting(), torch.inference_mode():
            return self.drafter.generate(prompts, config, record=self._record())

    def stream(self, prompt: str, **settings):
        """Yield the draft as it is written, the canvas after each refine step, then the result (hybrid.streaming)."""
        from hybrid.streaming import stream

        return stream(self, prompt, **settings)

    @_serialised
    def draft_from_text(self, prompts: str | list[str], texts: str | list[str]) -> Draft:
        """A Draft of given texts (teacher-forced by the drafter, no generation), for `pipe(prompts, draft=...)`: refine a
        text that was written elsewhere, e.g. repair a planted error in a reference summary."""
        with self._drafting():
            return self.drafter.teacher_forced(prompts, texts, keep_distributions=self.refiner is not None)

    @torch.inference_mode()
    def _run(self, prompts: list[str], draft_config: DraftConfig, sampler_config: SamplerConfig, mode: str,
             draft: Draft | None = None, sources: list[str] | None = None, hooks: dict | None = None) -> list[GenerationResult]:
        hooks = hooks or {}
        start = time.perf_counter()
        generator = torch.Generator().manual_seed(draft_config.seed) if draft_config.seed is not None else None
        timings = StageTimings(load_s=self.load_s)
        reused = draft is not None
        if mode != "diffusion":
            if not reused:
                with self._drafting():
                    draft = self.drafter.generate(prompts, draft_config, on_token=hooks.get("on_token"), record=self._record())
            timings.draft_s = draft.timings.total_s
            timings.draft_prefill_s = draft.timings.prefill_s
            timings.draft_decode_s = draft.timings.decode_s
            timings.draft_tokens_per_s = draft.timings.tokens_per_s
        if sampler_config.steps == 0:
            final_ids = [draft.token_ids[row, : draft.lengths[row]].tolist() for row in range(len(prompts))]
            output = None
        else:
            refine_start = time.perf_counter()
            output, final_ids = self._refine(prompts, draft, draft_config, sampler_config, generator, sources, hooks.get("on_step"))
            timings.refine_s = time.perf_counter() - refine_start
        timings.total_s = time.perf_counter() - start + (draft.timings.total_s if reused else 0.0)
        mask_id = self.refiner.mask_token_id if self.refiner is not None else None
        return [result_for_row(self.tokenizer, mask_id, row, prompts[row], draft, final_ids[row], output, mode, sampler_config, timings)
                for row in range(len(prompts))]

    def _record(self):
        """What drafting keeps of its lower layers for the refiner (hybrid.refiner.cache.adopt_lower), if anything."""
        return self.refiner.lower_layers_to_record() if self.refiner is not None else None

    def _drafting(self):
        """The context drafting runs in: the shared backbone without the refiner's LoRA."""
        return self.refiner.adapter_disabled() if self.refiner is not None else nullcontext()

    def _refine(self, prompts, draft, draft_config: DraftConfig, sampler_config: SamplerConfig, generator, sources=None, on_step=None):
        refiner = self.refiner
        eos = self.tokenizer.eos_token_id
        chosen = kinds_of = None
        if sources is not None:  # grounded: re-noise what the source does not support, and nothing when all is supported
            kinds_of, chosen = unsupported_in_drafts(self.tokenizer, draft, sources, sampler_config.ground_kinds)
            if not chosen.any():
                return SamplerOutput(canvas=draft.token_ids.clone()), [draft.token_ids[row, : draft.lengths[row]].tolist() for row in range(len(prompts))]
        if draft is None:  # diffusion only: the whole canvas is masks
            prompt_ids, prompt_mask = self.drafter.encode_prompts(prompts, draft_config.max_new_tokens)
            canvas = torch.full((len(prompts), draft_config.max_new_tokens), refiner.mask_token_id, dtype=torch.long, device=prompt_ids.device)
        else:
            prompt_ids, prompt_mask = draft.prompt_ids, draft.prompt_attention_mask
            canvas = None
        copies_only = chosen is not None and sampler_config.verify and not sampler_config.ground_refill
        # the lower layers already ran over the prompt and the draft while drafting: the refiner takes their states
        state = None if copies_only else refiner.encode_prompt(prompt_ids, prompt_mask, draft.lower if draft is not None else None)
        editable = anchor = None
        # a verified text keeps the asked length: only a draft that ended may grow, so only it gets slack
        grows = [n < draft_config.max_new_tokens for n in draft.lengths] if sampler_config.verify and draft is not None else None
        if canvas is None:
            scores = None
            if sampler_config.select == "confidence":
                if refiner.config.renoised_input == "draft":  # the first refine pass shows the lower layers the draft and its slack
                    refiner.prepare_lower(state, with_slack(draft.token_ids, draft.lengths, slack_of(sampler_config, "confidence"), eos,
                                                            refiner.mask_token_id, grows))
                scores = score_draft(refiner, state, draft.token_ids)
            canvas, _ = build_canvas(draft.token_ids, draft.logprobs, draft.lengths, sampler_config, eos, refiner.mask_token_id, generator,
                                     scores=scores, chosen=chosen, grows=grows)
            # Only each row's own draft and slack may change; what follows is batch padding.
            lengths = torch.tensor(draft.lengths, device=canvas.device) + sampler_config.slack
            editable = torch.arange(canvas.shape[1], device=canvas.device)[None] < lengths[:, None]
            anchor = torch.full_like(canvas, -1)
            anchor[:, : draft.token_ids.shape[1]] = draft.token_ids
            anchor[torch.arange(canvas.shape[1], device=canvas.device)[None] >= torch.tensor(draft.lengths, device=canvas.device)[:, None]] = -1
            if refiner.config.renoised_input == "draft" and state is not None:
                state.shown = anchor  # a re-noised slot shows its draft token (marked); the slack shows the mask
            if grows is not None:  # nothing past a draft that may not grow is text
                editable &= torch.tensor(grows, device=canvas.device)[:, None] | (anchor >= 0)
        total = prompt_ids.shape[1] + canvas.shape[1]
        if total > self.drafter.context_length:
            raise HybridError(f"prompt plus canvas is {total} tokens, beyond the model's context of {self.drafter.context_length}")
        scorer = prior = original = original_logp = None
        if draft is not None and (sampler_config.product or sampler_config.verify):
            scorer = DrafterScorer(refiner.model, refiner.adapter_disabled)
            drafter_state = DrafterScorer.prompt_from_draft(draft) or scorer.encode_prompt(prompt_ids, prompt_mask)
            original = torch.where(anchor >= 0, anchor, torch.full_like(anchor, eos))
            prior = self._drafter_prior(draft, original, scorer, drafter_state)
            original_logp = gather_tokens(prior, original)
            # The drafter knows the slot after each draft (its end, or its next word); later slack slots follow a text
            # that ended, so there the refiner proposes alone.
            beyond = torch.arange(canvas.shape[1], device=canvas.device)[None] > torch.tensor(draft.lengths, device=canvas.device)[:, None]
            drafter_prior = prior  # grounded repair ranks the source's copies by it (slots inside the drafts are untouched)
            prior = prior.masked_fill_(beyond[..., None], 0.0) if sampler_config.product else None
        if copies_only:  # source copies only: no refiner pass at all
            output = SamplerOutput(canvas=canvas)
        else:
            allowed = restricted = None
            if chosen is not None:  # an unsupported slot is refilled from the source's own tokens
                vocab = refiner.model.get_output_embeddings().weight.shape[0]
                allowed, restricted = source_restriction(self.tokenizer, sources, vocab, chosen, editable)
            output = refine(refiner, state, canvas, sampler_config, generator, editable=editable, anchor=anchor, end_token_id=eos,
                            prior=prior, allowed=allowed, restricted=restricted, on_step=on_step)
        del prior
        if chosen is not None and sampler_config.verify:
            final, output.proposals = repair_draft(self.tokenizer, refiner.mask_token_id, draft, output.canvas, kinds_of, sources,
                                                   sampler_config, scorer, drafter_state, original_logp, drafter_prior)
            return output, final
        if sampler_config.verify:  # what may not change (masks left, padding, a cut draft's slack) is the draft's again
            output.canvas = torch.where(editable & (output.canvas != refiner.mask_token_id), output.canvas, original)
        if sampler_config.verify and ((output.canvas != original) & editable).any():  # nothing changed: nothing to verify
            scored = _within_window((output.canvas != original) & editable, sampler_config.verify_window)
            # the refiner's lower layers are the drafter's: brought up to the proposal as far as a score reads, they spare
            # the verify pass its lower layers
            stop = int(scored.any(0).nonzero().max()) + 1
            proposed_logp = scorer.token_logprobs(drafter_state, output.canvas, scored, lower=refiner.lower_output(state, output.canvas, stop))
            # Only what may change is scored: a cut draft's slack (and its end slot, which drafting never scored) is not text.
            original_logp, proposed_logp = original_logp.masked_fill(~editable, 0.0), proposed_logp.masked_fill(~editable, 0.0)
            output.canvas, output.proposals = verify_changes(
                original, output.canvas, original_logp, proposed_logp, output.refiner_gain, editable, self.drafter.end_ids,
                sampler_config.verify_window, sampler_config.verify_weight)
        final_ids = [self._until_end(output.canvas[row].tolist()) for row in range(len(prompts))]
        return output, final_ids

    @staticmethod
    def _drafter_prior(draft: Draft, original: torch.Tensor, scorer: DrafterScorer, drafter_state) -> torch.Tensor:
        """(B, L, V) the drafter's log-distribution of every canvas slot given the draft before it: kept from drafting
        where the draft has it (zeros for the slots drafting never reached), else one teacher-forced pass. Always a new
        tensor (the caller edits it in place; a draft may be refined again)."""
        if draft.distributions is None:
            return scorer.logprobs(drafter_state, original)
        kept = draft.distributions[:, : original.shape[1]]
        prior = kept.new_zeros(kept.shape[0], original.shape[1], kept.shape[2])
        prior[:, : kept.shape[1]] = kept
        return prior

    def _until_end(self, ids: list[int]) -> list[int]:
        ends = self.drafter.end_ids | {self.refiner.mask_token_id}
        for i, token in enumerate(ids):
            if token in ends:
                return ids[:i]
        return ids


def _within_window(changed: torch.Tensor, window: int) -> torch.Tensor:
    """(B, L) the slots a verify score can read: each changed slot and the `window` slots after it (hybrid.verify)."""
    scored = changed.clone()
    for shift in range(1, min(window, changed.shape[1] - 1) + 1):
        scored[:, shift:] |= changed[:, :-shift]
    return scored
