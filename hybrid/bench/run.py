"""Wall-clock benchmark: draft only, diffusion only and hybrid, side by side in one run.

Every figure that matters is a ratio measured in the same process: hybrid / draft wall-clock, one refine step over
one AR decode step (AR-token equivalents), bfloat16 / float32. Each timing is the median of several repeats after a
warm-up. Absolute seconds depend on the machine; the ratios are what to compare.
"""

from __future__ import annotations

import logging
import platform
import statistics
from dataclasses import dataclass, field, replace

import torch
from tqdm.auto import tqdm

from hybrid.bench.memory import peak_memory_of_generate
from hybrid.bench.step_costs import PROMPTS, StepCost, measure_bandwidth_gbs, median_time, step_cost
from hybrid.config import DEFAULT_REFINE_STEPS, DTYPE_NAMES, DraftConfig, SamplerConfig
from hybrid.evaluation.harness.systems import DRAFT, System
from hybrid.models import DEFAULT_DRAFTER, resolve_device
from hybrid.pipeline import HybridPipeline
from hybrid.refiner import DEFAULT_REFINER, Refiner, resolve_refiner

log = logging.getLogger(__name__)

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
    speculate: str = "auto"  # drafting's proposal source (DraftConfig.speculate): batches of several prompts decode plainly


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


def _load(config: BenchConfig, dtype: str) -> tuple[HybridPipeline, str]:
    folder = resolve_refiner(config.refiner)
    pipe = HybridPipeline.from_pretrained(config.draft_model, refiner="none", dtype=dtype, device=config.device)
    model = pipe.drafter.model
    if folder is not None:
        pipe.refiner = Refiner.load(folder, model).to(device=model.device, dtype=model.dtype).eval()
        return pipe, config.refiner or DEFAULT_REFINER  # as the user named it: a shipped name or their own path
    log.warning("no trained refiner installed: timing an untrained one (timings are valid, outputs are not)")
    pipe.refiner = Refiner.create(model, config.draft_model).to(device=model.device, dtype=model.dtype).eval()
    return pipe, "untrained"


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
                draft_config = DraftConfig(max_new_tokens=tokens, ignore_eos=True, seed=0, speculate=config.speculate)
                draft_s, drafts = median_time(lambda: pipe(prompts, draft_config, DRAFT.refine_config(config.refine), mode="draft"),
                                               config.repeats, config.warmup, config.budget_s)
                report.timings.append(Timing(dtype, batch, tokens, DRAFT, draft_s, batch * tokens / draft_s, 1.0, 0))
                bar.update()
                decode_step_s = statistics.median(r[0].timings.draft_decode_s for r in drafts) / max(tokens - 1, 1)
                report.step_costs.append(step_cost(pipe, dtype, batch, tokens, decode_step_s, config.repeats))
                draft = pipe.draft(prompts, draft_config) if config.reuse_draft else None
                warmup = config.warmup
                for steps in config.steps:
                    for system in (replace(s, steps=steps) for s in systems):
                        given = draft if system.refines_draft else None
                        call = lambda: pipe(prompts, draft_config, system.refine_config(config.refine), mode=system.mode,  # noqa: E731
                                            draft=given)
                        seconds, outputs = median_time(call, config.repeats, warmup, config.budget_s)
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
