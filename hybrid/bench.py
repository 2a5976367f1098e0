"""Wall-clock benchmark: draft only, diffusion only and hybrid, side by side in one run.

Every figure that matters is a ratio measured in the same process: hybrid / draft wall-clock, one refine step over
one AR decode step (AR-token equivalents), bfloat16 / float32. Each timing is the median of several repeats after a
warm-up. Absolute seconds depend on the machine; the ratios are what to compare.
"""

from __future__ import annotations

import logging
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hybrid.errors import HybridError
from hybrid.models import DEFAULT_DRAFTER, resolve_device, synchronize
from hybrid.config import DEFAULT_REFINE_STEPS, DTYPE_NAMES, DraftConfig, SamplerConfig, default_slack
from hybrid.pipeline import HybridPipeline, resolve_refiner
from hybrid.refiner import Refiner
from hybrid.systems import DRAFT, System
from hybrid.verify import DrafterScorer

log = logging.getLogger(__name__)

PROMPTS = [
    "The history of Rome",
    "Explain how a refrigerator keeps food cold.",
    "Write a short letter to a friend about a trip to the sea.",
    "What are the main causes of the French Revolution?",
    "Describe the life cycle of a butterfly.",
    "Give three tips for learning a new language.",
    "Summarise the plot of Romeo and Juliet.",
    "Why is the sky blue?",
]


@dataclass
class BenchConfig:
    lengths: list[int] = field(default_factory=lambda: [128])
    steps: list[int] = field(default_factory=lambda: [DEFAULT_REFINE_STEPS, 8])  # the default K, and K 8
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    dtypes: list[str] = field(default_factory=lambda: list(DTYPE_NAMES))
    repeats: int = 3
    warmup: int = 1
    budget_s: float = 0.0  # > 0: stop repeating a cell once its timed runs exceed this (at least one run; long runs are steady)
    reuse_draft: bool = False  # True: hybrid = the draft's median + refining that same draft (timed apart), instead of end to end
    refine: SamplerConfig = field(default_factory=SamplerConfig)  # the settings every timed system starts from
    draft_model: str = DEFAULT_DRAFTER
    refiner: str | None = None  # None: the shipped default refiner (general-4-layers), or an untrained one if none is installed
    measure_memory: bool = True
    cache_refresh: int = 4  # also time hybrid with approximate canvas-cache reuse (0: skip that system)
    device: str = "cpu"  # cpu, cuda, cuda:N or auto


PRESETS = {
    "quick": BenchConfig(),
    # The full sweep would take hours end to end on 2 cores (every hybrid call re-drafts 512 tokens), so there the
    # hybrid is timed as draft + refine of the same draft, warm-up runs once per cell, and long cells run fewer repeats.
    "full": BenchConfig(lengths=[32, 128, 512], steps=[1, 2, 4, 8, 16], batch_sizes=[1, 8], repeats=3,
                        budget_s=20.0, reuse_draft=True),
}


@dataclass
class Timing:
    dtype: str
    batch: int
    new_tokens: int
    system: System  # draft, diffusion or hybrid, with its K (bench.json: "system" is its label, "steps" its K)
    seconds: float  # median wall-clock of one call
    tokens_per_s: float  # new tokens (all rows) per second
    ratio_to_draft: float
    steps_run: float  # median denoising steps actually run (early exit)
    # A hybrid that drafts in the timed call: the median over its calls of the call's time over that call's own drafting.
    # Cells are timed one after another, so a machine whose speed drifts moves ratio_to_draft; this one it cannot (its
    # drafting also records the lower layers for the refiner, at most ~1% of a draft). None for the other systems.
    ratio_to_own_draft: float | None = None


@dataclass
class StepCost:
    dtype: str
    batch: int
    canvas: int  # slots: the new tokens, and the slack where the default canvas has one
    decode_step_s: float  # one AR decode step of the drafter
    # one refiner forward over the whole canvas (prompt cached), every layer run, its head read as the default proposal
    # reads it
    refine_step_s: float
    ar_token_equivalents: float
    # A following step whose lower-layer inputs did not change (Refiner.reuse_lower: only the top layers and the head
    # run); None for a refiner whose every layer is bidirectional.
    reused_step_s: float | None = None
    reused_ar_token_equivalents: float | None = None
    # The verify pass for one change in the middle of a real draft (DrafterScorer.token_logprobs): every layer from the
    # changed slot over one verify window (it and the `verify_window` after it), drafting's cache before it.
    verify_pass_s: float | None = None

    @property
    def lower_layers_s(self) -> float | None:
        """What the lower layers cost in a full step: the full step minus one that reuses them."""
        return None if self.reused_step_s is None else self.refine_step_s - self.reused_step_s


@dataclass
class BenchReport:
    config: BenchConfig
    refiner: str
    machine: dict
    timings: list[Timing] = field(default_factory=list)
    step_costs: list[StepCost] = field(default_factory=list)
    peak_rss_mb: float | None = None  # `hybrid generate --refine-steps 8` on the defaults, in a child process
    peak_gpu_mb: float | None = None  # on a GPU: the most GPU memory torch held during the whole bench
    decode_bound_s: dict = field(default_factory=dict)  # per dtype: weight bytes / measured memory bandwidth

    def ratio(self, dtype: str, batch: int, tokens: int, system: System) -> float | None:
        for t in self.timings:
            if (t.dtype, t.batch, t.new_tokens, t.system) == (dtype, batch, tokens, system):
                return t.ratio_to_draft
        return None


def _median_time(call, repeats: int, warmup: int, budget_s: float = 0.0) -> tuple[float, list]:
    """Median wall-clock of `call` over `repeats` runs after `warmup` untimed ones; with `budget_s` > 0, repeating
    stops early once the timed runs add up to more than it (a 30 s run needs no third repeat to be steady)."""
    for _ in range(warmup):
        call()
    seconds, outputs = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        outputs.append(call())
        seconds.append(time.perf_counter() - start)
        if budget_s > 0 and sum(seconds) > budget_s:
            break
    return statistics.median(seconds), outputs


def _load(config: BenchConfig, dtype: str) -> tuple[HybridPipeline, str]:
    folder = resolve_refiner(config.refiner)
    pipe = HybridPipeline.from_pretrained(config.draft_model, refiner="none", dtype=dtype, device=config.device)
    model = pipe.drafter.model
    if folder is not None:
        pipe.refiner = Refiner.load(folder, model).to(device=model.device, dtype=model.dtype).eval()
        return pipe, str(folder)
    log.warning("no trained refiner installed: timing an untrained one (timings are valid, outputs are not)")
    pipe.refiner = Refiner.create(model, config.draft_model).to(device=model.device, dtype=model.dtype).eval()
    return pipe, "untrained"


def measure_bandwidth_gbs(megabytes: int = 512, device: torch.device | str = "cpu") -> float:
    """Sustained read bandwidth of the device, measured by summing a large tensor (the bound for a decode step)."""
    device = torch.device(device)
    data = torch.ones(megabytes * 2**20 // 4, dtype=torch.float32, device=device)
    data.sum()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(5):
        data.sum()
    synchronize(device)
    return 5 * data.numel() * 4 / (time.perf_counter() - start) / 1e9


def default_canvas(tokens: int) -> int:
    """Slots of the default refine canvas over a draft of `tokens` cut at its limit (the bench's): no slack under
    verification, where such a draft may not grow (hybrid.canvas.with_slack)."""
    config = SamplerConfig()
    return tokens if config.verify else tokens + default_slack(config.select)


def _step_cost(pipe: HybridPipeline, dtype: str, batch: int, tokens: int, decode_step_s: float, repeats: int) -> StepCost:
    prompts = (PROMPTS * batch)[:batch]
    prompt_ids, prompt_mask = pipe.drafter.encode_prompts(prompts, tokens)
    refiner, config, width = pipe.refiner, SamplerConfig(), default_canvas(tokens)
    canvas = torch.full((batch, width), refiner.mask_token_id, dtype=torch.long, device=prompt_ids.device)
    need = torch.ones(canvas.shape, dtype=torch.bool, device=canvas.device)
    vocab = refiner.model.get_output_embeddings().weight.shape[0]
    # The default proposal scores each slot's shortlist (which tokens are listed does not change the cost), and the
    # whole vocabulary where its change would pass the guard: one slot a text here. The bench prompt's refinement had
    # one such slot in 6 (fp32) or 7 (bf16) of its 8 steps; at batch 8, 2 to 24 a step. A few rows read the whole
    # weight once however many they are (fp32: 13 ms for 1 row, 19 ms for 8, 21 ms for 16 on the 2-core CPU).
    ids = torch.randint(vocab, (batch * width, config.shortlist + 1), generator=torch.Generator().manual_seed(0)).to(canvas.device)
    whole = torch.zeros(batch, width, dtype=torch.bool, device=canvas.device)
    whole[:, width // 2] = True
    whole = whole.flatten()

    def step(fresh: bool):
        if fresh:
            state.lower = None  # nothing kept: every layer runs
        if config.shortlist:
            refiner.listed_logits(state, canvas, need, ids, whole)
        else:
            refiner.needed_logits(state, canvas, need)
        synchronize(canvas.device)  # GPU work is asynchronous: time it to the end

    def verify():
        scorer.token_logprobs(drafter_state, changed, window)
        synchronize(canvas.device)

    with torch.inference_mode():
        state = refiner.encode_prompt(prompt_ids, prompt_mask)
        seconds, _ = _median_time(lambda: step(True), repeats, 1)
        reused = verify_s = None
        if refiner.reuses_lower:
            reused, _ = _median_time(lambda: step(False), repeats, 1)
    # the verify pass for one change in the middle of a real draft: drafting's keys and values serve before it
    draft = pipe.drafter.generate(prompts, DraftConfig(max_new_tokens=tokens, ignore_eos=True, seed=0, keep_distributions=True))
    scorer, drafter_state = DrafterScorer(refiner.model, refiner.adapter_disabled), DrafterScorer.prompt_from_draft(draft)
    middle = draft.token_ids.shape[1] // 2
    changed = draft.token_ids.clone()
    changed[:, middle] = torch.where(changed[:, middle] == 1, 2, 1)  # another token
    window = torch.zeros(changed.shape, dtype=torch.bool, device=changed.device)
    window[:, middle : middle + config.verify_window + 1] = True
    with torch.inference_mode():
        verify_s, _ = _median_time(verify, repeats, 1)
    return StepCost(dtype, batch, width, decode_step_s, seconds, seconds / decode_step_s, reused,
                    reused / decode_step_s if reused is not None else None, verify_s)


def peak_memory_of_generate(refiner: str | None, max_new_tokens: int = 128) -> float:
    """Peak resident memory (MB) of a `hybrid generate --refine-steps 8` process on the default drafter."""
    command = [sys.executable, "-m", "hybrid.cli", "generate", "The history of Rome", "--refine-steps", "8",
               "--max-new-tokens", str(max_new_tokens)]
    with tempfile.TemporaryDirectory() as tmp:
        if refiner is None and resolve_refiner(None) is None:  # time an untrained refiner written to a temp folder
            from hybrid.models import load_causal_lm

            model, _ = load_causal_lm(DEFAULT_DRAFTER)
            Refiner.create(model, DEFAULT_DRAFTER).save(Path(tmp) / "untrained")
            del model
            refiner = str(Path(tmp) / "untrained")
        if refiner is not None:
            command += ["--refiner", refiner]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        peak_kb = 0
        while process.poll() is None:  # the child's own high-water mark (ru_maxrss of children would count the fork)
            peak_kb = max(peak_kb, _vm_hwm_kb(process.pid))
            time.sleep(0.05)
        stderr = process.stderr.read().strip()
        if process.returncode != 0:
            raise HybridError(f"the memory probe failed: {stderr.splitlines()[-1] if stderr else process.returncode}")
    return peak_kb / 1024


def _vm_hwm_kb(pid: int) -> int:
    """Peak resident memory so far of a running process, from /proc (Linux); 0 where unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def run_bench(config: BenchConfig) -> BenchReport:
    machine = {"platform": platform.platform(), "processor": platform.processor(), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "cuda": torch.cuda.is_available()}
    device = resolve_device(config.device)
    machine["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    report = BenchReport(config, refiner="", machine=machine)
    cells = [(d, b, n) for d in config.dtypes for b in config.batch_sizes for n in config.lengths]
    systems = [System("diffusion"), System("hybrid")] + ([System("hybrid", cache_refresh=config.cache_refresh)] if config.cache_refresh > 1 else [])
    bar = tqdm(total=len(cells) * (1 + len(systems) * len(config.steps)), desc="bench", unit="cell")
    for dtype in config.dtypes:
        pipe, report.refiner = _load(config, dtype)
        weight_bytes = sum(p.numel() * p.element_size() for p in pipe.drafter.model.parameters())
        report.decode_bound_s[dtype] = weight_bytes / (measure_bandwidth_gbs(device=device) * 1e9)
        for batch in config.batch_sizes:
            prompts = (PROMPTS * batch)[:batch]
            for tokens in config.lengths:
                draft_config = DraftConfig(max_new_tokens=tokens, ignore_eos=True, seed=0)
                draft_s, drafts = _median_time(lambda: pipe(prompts, draft_config, DRAFT.refine_config(config.refine), mode="draft"),
                                               config.repeats, config.warmup, config.budget_s)
                report.timings.append(Timing(dtype, batch, tokens, DRAFT, draft_s, batch * tokens / draft_s, 1.0, 0))
                bar.update()
                decode_step_s = statistics.median(r[0].timings.draft_decode_s for r in drafts) / max(tokens - 1, 1)
                report.step_costs.append(_step_cost(pipe, dtype, batch, tokens, decode_step_s, config.repeats))
                draft = pipe.draft(prompts, draft_config) if config.reuse_draft else None
                warmup = config.warmup
                for steps in config.steps:
                    for system in (replace(s, steps=steps) for s in systems):
                        given = draft if system.refines_draft else None
                        call = lambda: pipe(prompts, draft_config, system.refine_config(config.refine), mode=system.mode,  # noqa: E731
                                            draft=given)
                        seconds, outputs = _median_time(call, config.repeats, warmup, config.budget_s)
                        seconds += draft_s if given is not None else 0.0
                        warmup = config.warmup if not config.reuse_draft else 0  # with reuse: one warm-up per cell
                        steps_run = statistics.median(r[0].steps_run for r in outputs)
                        own = (statistics.median(r[0].timings.total_s / r[0].timings.draft_s for r in outputs)
                               if system.mode == "hybrid" and given is None else None)
                        report.timings.append(Timing(dtype, batch, tokens, system, seconds, batch * tokens / seconds, seconds / draft_s, steps_run,
                                                     own))
                        bar.update()
    bar.close()
    if device.type == "cuda":
        report.peak_gpu_mb = torch.cuda.max_memory_allocated() / 2**20
    elif config.measure_memory:
        report.peak_rss_mb = peak_memory_of_generate(config.refiner)
    return report
