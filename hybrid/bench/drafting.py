"""Drafting speed side by side, on the prompts of the eval suites: Hugging Face `model.generate` (greedy, and with its
prompt lookup) on the model as transformers loads it, `model.generate` again on our packed weights (the kernels' share
of our speed, hybrid.drafting.packed_weights), our plain drafting and each speculative source (lookup with and without
the drafter's lookup store), interleaved prompt by prompt so that machine drift hits every system alike. Every system
writes exactly `max_new_tokens` tokens. Greedy speculative drafts are compared token for token with plain ones; a
difference is reported with the logit gap where it starts."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hybrid.config import DraftConfig
from hybrid.drafting.proposals import LookupProposals
from hybrid.models import DEFAULT_DRAFTER
from hybrid.results import Result

STOCK_SYSTEMS = ("hf-generate", "hf-prompt-lookup")  # on the model as transformers loads it
HF_SYSTEMS = STOCK_SYSTEMS + ("hf-generate-packed",)
# lookup-text: lookup over the prompt and text alone, without the drafter's lookup store (hybrid.drafting.token_store)
SYSTEMS = HF_SYSTEMS + ("plain", "lookup-text", "lookup", "hybrid")  # what `hybrid bench --preset drafting` times
COPY_HEAVY, OPEN = ("news", "summarize"), ("continue", "facts")


@dataclass
class SystemTiming(Result):
    system: str
    seconds: float = 0.0
    tokens: int = 0
    passes: int = 0  # decode passes after the prefill (ours only)
    identical: int = 0  # texts equal to plain drafting's
    texts: int = 0

    def __add__(self, other: "SystemTiming") -> "SystemTiming":
        return SystemTiming(self.system, self.seconds + other.seconds, self.tokens + other.tokens, self.passes + other.passes,
                            self.identical + other.identical, self.texts + other.texts)

    @property
    def tokens_per_pass(self) -> float | None:
        return (self.tokens - self.texts) / self.passes if self.passes else None


@dataclass
class Divergence(Result):
    suite: str
    example: str
    system: str
    position: int
    logit_gap: float  # plain's log-prob of its own token minus of the other's, at the first differing slot


@dataclass
class DraftingSpeed(Result):
    dtype: str
    max_new_tokens: int
    suites: dict = field(default_factory=dict)  # suite -> {system: SystemTiming}
    divergences: list = field(default_factory=list)

    def ratio(self, suites: tuple[str, ...], system: str, over: str = "hf-generate") -> float | None:
        """Wall-clock of `over` divided by `system`'s, summed over `suites` (above 1: `system` is faster)."""
        rows = [self.suites[s] for s in suites if s in self.suites]
        mine = sum(r[system].seconds for r in rows if system in r)
        theirs = sum(r[over].seconds for r in rows if over in r)
        return theirs / mine if mine and theirs else None


def measure(drafter, prompts: dict[str, list[tuple[str, str]]], systems: list[str], max_new_tokens: int, dtype: str,
            progress=None, pipeline=None, stock=None) -> DraftingSpeed:
    """`prompts`: suite -> [(example id, prompt)]. `systems`: any of HF_SYSTEMS, "plain", the speculate choices and
    "hybrid" (`pipeline` with every default: speculative drafting and the verified refine stage). `stock`: a Drafter on
    the unpacked model, for STOCK_SYSTEMS (default: `drafter`)."""
    stock = stock or drafter
    report = DraftingSpeed(dtype, max_new_tokens)
    for suite, examples in prompts.items():
        rows = report.suites.setdefault(suite, {name: SystemTiming(name) for name in systems})
        for example, prompt in examples:
            texts = {}
            for name in systems:
                runner = pipeline if name == "hybrid" else stock if name in STOCK_SYSTEMS else drafter
                seconds, ids, passes, plain = _run(runner, name, prompt, max_new_tokens)
                row = rows[name]
                row.seconds, row.tokens, row.passes, row.texts = row.seconds + seconds, row.tokens + len(ids), row.passes + passes, row.texts + 1
                texts[name] = ids
                if plain is not None:
                    texts["plain-distributions"] = plain
            for name in systems:
                same = texts[name] == texts.get("plain", texts[name])
                rows[name].identical += same
                if not same and "plain-distributions" in texts and name not in HF_SYSTEMS:
                    report.divergences.append(_divergence(suite, example, name, texts["plain"], texts[name], texts["plain-distributions"]))
            if progress is not None:
                progress.update(1)
    return report


def _run(drafter, system: str, prompt: str, n: int):
    """(seconds, token ids, passes, plain's distributions or None) of one system on one prompt. The hybrid's ids are
    its draft's (its text is the draft wherever verification keeps no change)."""
    if system == "hybrid":
        start = time.perf_counter()
        result = drafter(prompt, max_new_tokens=n, ignore_eos=True)
        return time.perf_counter() - start, result.draft_token_ids, result.speculation["passes"], None
    if system in HF_SYSTEMS:
        ids, mask = drafter.encode_prompts([prompt], n)
        extra = {"prompt_lookup_num_tokens": 10} if system == "hf-prompt-lookup" else {}
        with torch.inference_mode():
            start = time.perf_counter()
            out = drafter.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                         pad_token_id=drafter.tokenizer.pad_token_id, **extra)
            seconds = time.perf_counter() - start
        return seconds, out[0, ids.shape[1]:].tolist(), 0, None
    speculate = {"plain": "off", "lookup-text": "lookup"}.get(system, system)
    config = DraftConfig(max_new_tokens=n, ignore_eos=True, speculate=speculate, keep_distributions=system == "plain")
    source = LookupProposals(block=config.speculate_block) if system == "lookup-text" else None
    start = time.perf_counter()
    draft = drafter.generate(prompt, config, source=source)
    seconds = time.perf_counter() - start
    return seconds, draft.token_ids[0].tolist(), draft.speculation.passes, draft.distributions[0] if system == "plain" else None


def _divergence(suite, example, system, plain: list[int], other: list[int], distributions: torch.Tensor) -> Divergence:
    at = next(i for i, (a, b) in enumerate(zip(plain, other)) if a != b) if plain != other[: len(plain)] else len(plain)
    gap = float(distributions[at, plain[at]] - distributions[at, other[at]]) if at < len(plain) and at < len(other) else 0.0
    return Divergence(suite, example, system, at, round(gap, 6))


def suite_prompts(names: list[str], per_suite: int, offset: int = 0) -> dict[str, list[tuple[str, str]]]:
    """suite -> [(example id, prompt)]: `per_suite` examples of each suite's evaluation data from `offset` on."""
    from hybrid.evaluation.harness.suite import load_examples, load_suite

    prompts = {}
    for name in names:
        suite, base = load_suite(name)
        prompts[name] = [(e.id, e.prompt) for e in load_examples(suite, base)[offset: offset + per_suite]]
    return prompts


def run_drafting_bench(dtypes: list[str], max_new_tokens: int, per_suite: int, systems: list[str], output: Path,
                       model: str = DEFAULT_DRAFTER, refiner: str | None = None, suites=COPY_HEAVY + OPEN,
                       offset: int = 0, block_drafter: str | None = None) -> list[DraftingSpeed]:
    """Every system on `per_suite` prompts of each suite (from the `offset`-th on), per dtype; writes drafting.json and
    drafting.md into `output`. `block_drafter` (a folder) serves the "diffusion" and "both" systems."""
    from tqdm import tqdm

    from hybrid.drafting.drafter import Drafter
    from hybrid.pipeline import HybridPipeline

    prompts = suite_prompts(list(suites), per_suite, offset)
    reports = []
    for dtype in dtypes:
        drafter, stock = Drafter.from_pretrained(model, dtype), Drafter.from_pretrained(model, dtype, pack_weights=False)
        if block_drafter is not None:
            from hybrid.drafting.block_drafter import BlockDrafter

            drafter.block_drafter = BlockDrafter.load(block_drafter, drafter.model)
            drafter.pack_weights()  # the block drafter's layers too
        pipeline = HybridPipeline.from_pretrained(draft_model=model, refiner=refiner, dtype=dtype) if "hybrid" in systems else None
        with tqdm(total=sum(map(len, prompts.values())), desc=f"drafting bench {dtype}") as bar:
            reports.append(measure(drafter, prompts, systems, max_new_tokens, dtype, bar, pipeline, stock))
    output.mkdir(parents=True, exist_ok=True)
    (output / "drafting.json").write_text(json.dumps([r.to_dict() for r in reports], indent=1))
    (output / "drafting.md").write_text(format_markdown(reports))
    return reports


def format_markdown(reports: list[DraftingSpeed]) -> str:
    divergences = [f"- {r.dtype} {d.suite}/{d.example} {d.system}: first differs at token {d.position}, logit gap {d.logit_gap}"
                   for r in reports for d in r.divergences]
    return (format_table(reports) + f"\n\n{reports[0].max_new_tokens} new tokens a prompt, every system. HF generate writes them "
            "with the end token suppressed and ours past it, so their texts can part at an end token. Greedy differences "
            "of ours from plain drafting:\n" + ("\n".join(divergences) or "none") + "\n")


def format_table(reports: list[DraftingSpeed]) -> str:
    """A Markdown table: per dtype and group of suites, each system's speed over HF generate and its tokens per pass."""
    lines = ["| dtype | prompts | system | speed over HF generate | tokens per pass | texts equal to plain |", "|---|---|---|---|---|---|"]
    for report in reports:
        for label, suites in (("copy-heavy (news, summarize)", COPY_HEAVY), ("open (continue, facts)", OPEN)):
            rows = [report.suites[s] for s in suites if s in report.suites]
            if not rows:
                continue
            for name in rows[0]:
                group = sum((r[name] for r in rows[1:]), rows[0][name])
                shown = lambda value: "" if value is None else f"{value:.2f}"  # noqa: E731 (no HF row: no ratio)
                lines.append(f"| {report.dtype} | {label} | {name} | {shown(report.ratio(suites, name))} | "
                             f"{shown(group.tokens_per_pass)} | {group.identical} / {group.texts} |")
    return "\n".join(lines)
