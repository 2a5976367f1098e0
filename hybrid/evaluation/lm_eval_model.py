"""The hybrid pipeline as an lm-evaluation-harness model (`pip install hybrid[lm-eval]`, lm-eval 0.4.x).

lm-eval 0.4.13 finds a model class only once the module that registers it (`@register_model`) is imported: it reads
no entry points for models. So `hybrid lm-eval ...` imports this module and hands its arguments to lm-eval's own
command line:

    hybrid lm-eval run --model hybrid --model_args refiner=general,refine_steps=2 \\
        --tasks hybrid_facts --include_path evals/lm_eval --limit 10

In Python, `lm_eval.simple_evaluate(model=HybridLM(...), tasks=[...])` works once this module is imported.

* `generate_until` runs the pipeline (draft, then refine and verify) and cuts the text at the request's stop strings
  again after refinement, since a refined text may hold a stop string the draft did not.
* `loglikelihood` and `loglikelihood_rolling` are scored by the drafter alone (the refiner has no left-to-right
  likelihood of its own): those tasks measure the drafter.
* Under `accelerate launch` (or `torch.distributed.run`) the model tells lm-eval its rank and world size and lends it
  accelerate's gather and barrier, so lm-eval shares each task's documents out to the processes and gathers their
  metrics on the main one; every request is answered alone, so the figures equal one process's.
"""

from __future__ import annotations

import logging

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm.auto import tqdm

from hybrid.pipeline import HybridPipeline
from hybrid.processes import launch_state, process_device

log = logging.getLogger(__name__)


@register_model("hybrid")
class HybridLM(LM):
    def __init__(self, draft_model: str = "smollm2-135m", refiner: str | None = None, refine_steps: int | None = None,
                 select: str = "auto", max_gen_toks: int = 128, use_chat_template: bool = False, dtype: str = "float32",
                 device: str = "cpu", batch_size: int | str = 4, pipeline: HybridPipeline | None = None, **_ignored) -> None:
        super().__init__()
        if str(device).startswith("cuda") and not torch.cuda.is_available():  # lm-eval's default device is cuda
            log.warning("lm-eval asked for device %s but there is no CUDA GPU: running on the CPU", device)
            device = "cpu"
        self.state = launch_state()
        device = process_device(str(device))
        self.pipe = pipeline or HybridPipeline.from_pretrained(draft_model, refiner, dtype, _flag(use_chat_template), device)
        self._device = torch.device(device)
        if self.state is not None:
            self._rank, self._world_size = self.state.process_index, self.state.num_processes
        self.refine_steps = None if refine_steps in (None, "") else int(refine_steps)
        self.select = select
        self.max_gen_toks = int(max_gen_toks)
        self.batch_size = 4 if str(batch_size) == "auto" else int(batch_size)

    # ---- data parallel: lm-eval shares the documents out by rank and gathers through these -------------------------

    def all_gather(self, tensor):
        from accelerate.utils import gather

        return gather(tensor) if self.state is not None else tensor

    def gather_object(self, obj, dst=0):
        from accelerate.utils import gather_object

        gathered = gather_object([obj]) if self.state is not None else [obj]
        return gathered if self.rank == dst else None

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    # ---- generation: the hybrid -------------------------------------------------------------------------------

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out = []
        for request in tqdm(requests, disable=disable_tqdm, desc="hybrid generate_until"):
            context, kwargs = request.args
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            result = self.pipe(context, max_new_tokens=int(kwargs.get("max_gen_toks", self.max_gen_toks)), refine_steps=self.refine_steps,
                               select=self.select, stop=tuple(until), temperature=float(kwargs.get("temperature", 0.0) or 0.0))
            out.append(cut_at(result.text, until))
        return out

    # ---- likelihoods: the drafter -------------------------------------------------------------------------------

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        out = []
        for request in tqdm(requests, disable=disable_tqdm, desc="hybrid loglikelihood (drafter)"):
            context, continuation = request.args
            context_ids = self._encode(context)
            continuation_ids = self._encode(context + continuation)[len(context_ids):] or self._encode(continuation)
            logp, greedy = self._score(context_ids, continuation_ids)
            out.append((logp, greedy))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        out = []
        for request in tqdm(requests, disable=disable_tqdm, desc="hybrid loglikelihood_rolling (drafter)"):
            ids = self._encode(request.args[0])
            window = self.pipe.drafter.context_length - 1
            total = 0.0
            for start in range(0, len(ids), window):  # disjoint windows, each conditioned on the start token only
                total += self._score([self._start_id()], ids[start : start + window])[0]
            out.append(total)
        return out

    def _encode(self, text: str) -> list[int]:
        return self.pipe.tokenizer(text, add_special_tokens=False).input_ids

    def _start_id(self) -> int:
        tokenizer = self.pipe.tokenizer
        return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id

    @torch.inference_mode()
    def _score(self, context_ids: list[int], continuation_ids: list[int]) -> tuple[float, bool]:
        context_ids = context_ids or [self._start_id()]
        keep = self.pipe.drafter.context_length - len(continuation_ids)
        ids = torch.tensor([context_ids[-keep:] + continuation_ids], device=self.pipe.drafter.model.device)
        with self.pipe.lock, self.pipe._drafting():  # the backbone is shared with calls other threads may make
            logits = self.pipe.drafter.model(input_ids=ids).logits[0, -len(continuation_ids) - 1 : -1].float()
        target = torch.tensor(continuation_ids, device=logits.device)
        logp = logits.log_softmax(-1).gather(-1, target[:, None]).sum()
        return float(logp), bool((logits.argmax(-1) == target).all())


def cut_at(text: str, stops: list[str]) -> str:
    """`text` up to the first of the stop strings."""
    cut = min((text.find(s) for s in stops if s and s in text), default=len(text))
    return text[:cut]


def _flag(value) -> bool:
    return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
