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

from hybrid.config import NO_REFINER, DraftConfig, SamplerConfig, configs_from
from hybrid.drafting.drafter import Draft, Drafter
from hybrid.errors import HybridError
from hybrid.results import GenerationResult, StageTimings, result_for_row
from hybrid.refining.grounded import grounding_source
from hybrid.models import DEFAULT_DRAFTER, load_causal_lm
from hybrid.refiner import Refiner, resolve_refiner
from hybrid.refining.steps import RefineRequest, refine_stage

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
                        use_chat_template: bool = True, device: str = "cpu", block_drafter: str | None = None,
                        pack_weights: bool = True, lookup_store: str | None = "auto") -> "HybridPipeline":
        """`refiner`: None for the shipped default (if installed), 'none' for draft only, a shipped name or a folder.
        `block_drafter`: a folder (or the shipped one's name) for speculate "diffusion" and "both"; None loads none.
        `pack_weights`: on a CPU in float32, linear layers on prepacked weights (hybrid.drafting.packed_weights).
        `lookup_store`: "auto", "none" or a folder (Drafter.use_lookup_store)."""
        start = time.perf_counter()
        model, tokenizer = load_causal_lm(draft_model, dtype, device)
        drafter = Drafter(model, tokenizer, use_chat_template).use_lookup_store(lookup_store)
        if block_drafter is not None:  # before the refiner: its copies of the top layers must not carry the refiner's LoRA
            from hybrid.drafting.block_drafter import BlockDrafter
            drafter.block_drafter = BlockDrafter.load(block_drafter, model)
        folder = None if refiner == "none" else resolve_refiner(refiner)
        refiner_obj = Refiner.load(folder, model).to(device=model.device, dtype=model.dtype).eval() if folder is not None else None
        if pack_weights:  # last: the refiner's and the block drafter's layers are packed too
            drafter.pack_weights()
        drafter.load_s = load_s = time.perf_counter() - start
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
        A `source` (one text, or one per prompt) means grounding: unless another `select` is chosen, the draft's names and
        numbers the source does not support are re-noised and repaired from its own (`select="unsupported"`,
        hybrid.refining.grounded); that rule without a source grounds each prompt in its text after its first blank line.
        `callback_on_token(tokens)` sees each drafted token, `callback_on_step_end(step, canvas, changed)` each step.
        """
        single = isinstance(prompts, str)
        batch = [prompts] if single else list(prompts)
        draft_config, refine_config = configs_from(settings, draft_config, refine_config)
        given = isinstance(source, str) or (source is not None and any(s is not None for s in source))
        if given and refine_config.select == "auto" and mode == "hybrid":
            refine_config = replace(refine_config, select="unsupported")  # a source given means: ground the draft in it
        sampler_config = refine_config.resolved(self.refiner is not None, self.default_select, mode)
        sources = _grounding_sources(batch, source) if sampler_config.select == "unsupported" and sampler_config.steps > 0 else None
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
        """The refine stage (hybrid.refining.steps): plan the canvas, the drafter's view of the draft, propose, verify."""
        if draft is None:  # diffusion only: the whole canvas is masks
            prompt_ids, prompt_mask = self.drafter.encode_prompts(prompts, draft_config.max_new_tokens)
        else:
            prompt_ids, prompt_mask = draft.prompt_ids, draft.prompt_attention_mask
        request = RefineRequest(self.refiner, self.tokenizer, draft, prompt_ids, prompt_mask, sampler_config, draft_config.max_new_tokens,
                                self.drafter.end_ids, self.drafter.context_length, generator, sources, on_step)
        refined = refine_stage(request)
        return refined.output, refined.final_ids


def _grounding_sources(prompts: list[str], source: str | list[str] | None) -> list[str]:
    """One source per prompt: the given one(s), else each prompt's text after its first blank line."""
    given = source if isinstance(source, list) else [source] * len(prompts)
    if len(given) != len(prompts):
        raise HybridError(f"got {len(given)} sources for {len(prompts)} prompts: pass one source per prompt")
    return [grounding_source(p, s) for p, s in zip(prompts, given)]
