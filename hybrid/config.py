"""The settings of each stage, declared once: one typed config for drafting and one for refining.

Each field carries its default, its range or choices and its help text. The CLI builds its options from these fields
(hybrid.cli.options), the pipeline takes the configs (or the same names as keyword arguments) and hands the refine
config on to the sampler, the eval harness and the bench start from them. This module imports no torch, so
`hybrid --help` stays fast. How each default was chosen is in docs/RESULTS.md.

    from hybrid.config import DraftConfig, SamplerConfig
    pipe(prompt, draft_config=DraftConfig(max_new_tokens=64), refine_config=SamplerConfig(steps=8))
    pipe(prompt, max_new_tokens=64, refine_steps=8)      # the same, by field name
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields, replace

from hybrid.errors import HybridError

# Chosen on validation splits no report uses (evals/choose_defaults.py -> evals/defaults/): with verification at
# weight 0 every strength and K tried changed at most 1 of 48 continue and 1 of 16 summarize drafts, so the cheapest
# setting that the judge never found worse is the default.
DEFAULT_REFINE_STEPS = 2
# Grounded repair, chosen on news and ACLSum validation prompts (evals/choose_grounding.py -> evals/defaults/grounding.json).
DEFAULT_GROUND_KINDS = ("entity", "number")
DEFAULT_SLACK = 4  # masked positions after the draft so the text can grow (0 under select "unsupported")
MAX_NEW_TOKENS_LIMIT = 4096
MAX_REFINE_STEPS = 256

MODES = ("hybrid", "draft", "diffusion")
DTYPE_NAMES = ("float32", "bfloat16")  # the weight dtypes hybrid.models loads
# auto: bfloat16 where the hardware multiplies it natively (AMX, AVX512-BF16, a GPU), else float32 (hybrid.models.resolve_dtype).
# float32 stays the default: no report has been rebuilt in bfloat16 to show its quality equal (docs/RESULTS.md).
DTYPE_CHOICES = DTYPE_NAMES + ("auto",)
NO_REFINER = "no refiner is available: pass --refiner PATH (a folder written by `hybrid finetune`) or use --refine-steps 0"
# auto: the detection head where the refiner has one; unsupported: the tokens the source does not support (hybrid.refining.grounded)
SELECT_CHOICES = ("auto", "logprob", "confidence", "random", "unsupported")
GROUND_KINDS = ("entity", "number", "word")  # what `unsupported` checks against the source (word: content words)
# speculative drafting's proposal sources (hybrid.drafting.proposals); auto: the one measured best, off: plain decoding
SPECULATE_CHOICES = ("auto", "off", "lookup", "diffusion", "both")
SCHEDULE_NAMES = ("linear", "cosine", "loglinear")  # hybrid.refining.schedule implements each (a test checks they agree)


def knob(default, help: str, *, flag: str | None = None, low=None, high=None, low_open: bool = False,
         high_open: bool = False, choices: tuple | None = None, cli: bool = True):
    """A config field with what the CLI and `validate()` need to know about it. `flag`: the CLI name when it is not
    the field's name with dashes; `cli=False` keeps a field out of the command line."""
    meta = {"help": help, "flag": flag, "low": low, "high": high, "low_open": low_open, "high_open": high_open,
            "choices": choices, "cli": cli}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


class _Checked:
    """`validate()` from the fields' ranges and choices, with one clear error for a value out of them."""

    def __post_init__(self):
        for f in fields(self):  # a sequence setting given as a list (the CLI, JSON, a generator) is kept as a tuple
            value = getattr(self, f.name)
            if isinstance(f.default, tuple) and not isinstance(value, (tuple, str)):
                setattr(self, f.name, tuple(value))

    def validate(self):
        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if value is None or not meta:
                continue
            name = f.name.replace("_", " ")
            if meta["choices"] is not None:
                values = value if isinstance(value, tuple) else (value,)
                unknown = [v for v in values if v not in meta["choices"]]
                if unknown or not values:
                    raise HybridError(f"unknown {name} {(unknown or [''])[0]!r}: choose from {', '.join(meta['choices'])}")
            if meta["low"] is not None or meta["high"] is not None:
                if isinstance(meta["low"], int) and isinstance(meta["high"], int) and (isinstance(value, bool) or not isinstance(value, int)):
                    raise HybridError(f"{name} must be an integer, got {value!r}")
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise HybridError(f"{name} must be a number, got {value!r}")
                if not _inside(value, meta):
                    raise HybridError(f"{name} must be in {_interval(meta)}, got {value!r}")
        return self


def _inside(value, meta) -> bool:
    low, high = meta["low"], meta["high"]
    above = low is None or (value > low if meta["low_open"] else value >= low)
    below = high is None or (value < high if meta["high_open"] else value <= high)
    return above and below


def _interval(meta) -> str:
    return f"{'(' if meta['low_open'] else '['}{meta['low']}, {meta['high']}{')' if meta['high_open'] else ']'}"


@dataclass
class DraftConfig(_Checked):
    """The autoregressive stage (hybrid.drafting.drafter)."""

    max_new_tokens: int = knob(128, "Length of the draft (and of the canvas in diffusion mode).", low=1, high=MAX_NEW_TOKENS_LIMIT)
    temperature: float = knob(0.0, "0 is greedy (drafting and refining alike).", low=0.0, high=10.0)
    top_p: float = knob(1.0, "Nucleus sampling share for drafting.", low=0.0, high=1.0, low_open=True)
    stop: tuple = knob((), "Stop drafting at this string (repeatable).")
    seed: int | None = knob(None, "Makes sampling repeatable.")
    ignore_eos: bool = knob(False, "Draft exactly max_new_tokens (benchmarks).", cli=False)
    repetition_penalty: float = knob(1.0, "Divide the logit of every token already in the prompt or text by this (1 = off), "
                                     "as Hugging Face generate does.", low=0.0, high=100.0, low_open=True)
    no_repeat_ngram_size: int = knob(0, "Never repeat an n-gram of this size (0 = off), as Hugging Face generate does.",
                                     low=0, high=64)
    # Speculative drafting (hybrid.drafting): proposals checked by one drafter pass; the text is the drafter's own
    # (greedy: token for token up to float rounding at near-ties; sampling: the same distribution). Batches of several
    # prompts decode plainly.
    speculate: str = knob("auto", "Propose tokens ahead and let the drafter check them in one pass: lookup (n-grams of the "
                          "prompt and text so far), diffusion (the shipped block drafter, or --block-drafter), both (lookup where it matches, "
                          "else the block drafter), off (plain decoding), auto (the best measured: lookup, off for bfloat16 on a "
                          "CPU that emulates it).", choices=SPECULATE_CHOICES)
    speculate_block: int = knob(4, "Most tokens proposed per pass (chosen on validation prompts).",
                                low=1, high=64)
    # Keep the drafter's whole log-distribution at every step (Draft.distributions): the refine stage's proposal prior
    # and the verifier's baseline then cost no extra pass. B x N x vocab floats.
    keep_distributions: bool = knob(False, "Keep the drafter's distributions for the refine stage.", cli=False)


@dataclass
class SamplerConfig(_Checked):
    """The refine stage (hybrid.refining.sampler, hybrid.refining.verify, hybrid.refining.grounded_repair). `steps`, `select` and `slack` may be
    left to the pipeline ("auto"/None), which resolves them for the refiner it has (`resolved`)."""

    steps: int | None = knob(None, f"Denoising steps K; 0 is draft only. Default: {DEFAULT_REFINE_STEPS} when a refiner is loaded, else 0.",
                             flag="refine-steps", low=0, high=MAX_REFINE_STEPS)
    strength: float = knob(0.5, "Share of draft tokens re-noised before refining.", low=0.0, high=1.0, low_open=True)
    select: str = knob("auto", "Which draft tokens to re-noise: auto (the detection head's doubt where the refiner has one, else "
                       "log-prob), lowest draft log-prob, lowest refiner confidence, random, or unsupported (the names and "
                       "numbers the source does not support).", choices=SELECT_CHOICES)
    schedule: str = knob("cosine", "Noise schedule: how many tokens each step commits.", choices=SCHEDULE_NAMES)
    slack: int | None = knob(None, f"Masked positions after the draft so the text can grow. Default: {DEFAULT_SLACK}, 0 under "
                             "--select unsupported.", low=0, high=256)
    edit_threshold: float | None = knob(None, "Re-mask visible tokens whose refiner probability falls under this (editing); off "
                                        "by default.", low=0.0, high=1.0, low_open=True, high_open=True)
    # A re-noised draft token is replaced only when the proposal gives the new token at least this probability. Chosen on
    # the validation splits (evals/defaults/guard-validation.md): the verifier rejected nearly every change the proposal
    # was less sure of, yet each one made the lower layers and the verify pass rerun from it. At 0.5 the continue split
    # proposed 42 groups instead of 134 at K 8 (46 instead of 137 at K 2), kept 2 (1 judged better, 1 worse; 0 better
    # without the guard) and refined 25% (17%) faster; summarize proposals and outcomes did not move. 0.7 and 0.9 kept
    # nothing the judge found better.
    min_change_confidence: float = knob(0.5, "Replace a re-noised draft token only when the proposal gives the new token at least "
                                        "this probability (0 = off): changes it is less sure of are not proposed, verified or paid for.",
                                        low=0.0, high=1.0)
    # Propose from the product of the drafter's distribution and the refiner's (log p_drafter + w log p_refiner).
    product: bool = knob(True, "Propose from the drafter's distribution times the refiner's (else the refiner's alone).")
    # 64 chosen on the validation splits (evals/defaults/shortlist-validation.md): at K 2 and K 8 every one of the 128
    # texts came out as over the whole vocabulary (64 and 256 alike), and the continue split's refine stage took 2.43 s
    # per batch of 8 instead of 3.33 at K 2, 4.73 instead of 5.56 at K 8 (summarize: 14.7 / 14.0 and 25.3 / 27.6 s).
    # A change the guard would let through is scored over the whole vocabulary (hybrid.refining.shortlist.exact_rows).
    shortlist: int = knob(64, "N > 0: take the product over the drafter's N likeliest tokens of each slot (and its draft token) "
                          "instead of the whole vocabulary, so the refiner's output head scores N + 1 tokens a slot (a change "
                          "the guard would let through, and a slot the drafter never saw, are scored over the whole "
                          "vocabulary); 0 = the whole vocabulary everywhere.", low=0, high=65536)
    # Drafter-verified edits (hybrid.refining.verify). Weight 0 won on validation: weights 1 and 2 let edits through that the
    # judge found worse.
    verify: bool = knob(True, "Keep a proposed change only when the drafter's log-likelihood of what it affects (plus the "
                        "weighted refiner gain) rises.")
    verify_weight: float = knob(0.0, "Weight of the refiner's log-prob gain in the verify score; 0: only what the drafter "
                                "prefers gets through.", low=0.0, high=100.0)
    verify_window: int = knob(8, "Tokens after a change whose drafter log-likelihood counts in its score.", low=0, high=64)
    cache_refresh: int = knob(0, "N > 1: between full passes every N steps, recompute only the canvas positions being "
                              "predicted (approximate); 0 is exact. Faster only for refiners whose every layer is "
                              "bidirectional: the exact reuse of causal lower layers (the shipped refiners) is faster.",
                              low=0, high=256)
    # Grounded refinement (select "unsupported", hybrid.refining.grounded_repair).
    ground_kinds: tuple = knob(DEFAULT_GROUND_KINDS, f"With --select unsupported: what is checked against the source, some "
                               f"of {','.join(GROUND_KINDS)}.", choices=GROUND_KINDS)
    ground_weight: float = knob(2.0, "With --select unsupported: verify-score bonus per unsupported token a change makes "
                                "supported.", low=0.0, high=100.0)
    ground_candidates: int = knob(3, "With --select unsupported: copies of the source's own names/numbers tried per "
                                  "unsupported span.", low=0, high=32)
    # On by default since the validation prompts grew to 64 news reports and 50 ACLSum papers: cuts raised entity
    # precision and consistency on both splits, ROUGE-L within 0.001 (evals/defaults/grounding_deletions*.json).
    ground_deletions: bool = knob(True, "With --select unsupported: also offer cutting each unsupported span out (with the "
                                  "connecting words before it), where no copy from the source scores above 0.")
    ground_refill: bool = knob(False, "With --select unsupported: also offer the refiner's own fill of each span (K refine "
                               "steps; it changed no validation outcome and tripled the cost).")
    temperature: float = knob(0.0, "0 = argmax; > 0 samples masked positions (set from the draft's temperature).", cli=False,
                              low=0.0, high=10.0)
    trace: bool = knob(False, "Record every commit and edit (SamplerOutput.trace).", cli=False)

    def resolved(self, has_refiner: bool, default_select: str, mode: str = "hybrid") -> "SamplerConfig":
        """The concrete settings one run uses: the default step count where a refiner is loaded, the refiner's own
        selection rule for "auto", the slack for the rule, strength 1 for diffusion, no verification outside hybrid."""
        if mode not in MODES:
            raise HybridError(f"unknown mode '{mode}': choose one of {', '.join(MODES)}")
        steps = self.steps if self.steps is not None else (DEFAULT_REFINE_STEPS if has_refiner else 0)
        if mode == "draft":
            steps = 0
        elif mode == "diffusion" and steps == 0:
            raise HybridError("diffusion mode needs --refine-steps of at least 1")
        select = default_select if self.select == "auto" else self.select
        if select == "unsupported" and steps > 0 and mode != "hybrid":
            raise HybridError("--select unsupported refines a draft: use it in hybrid mode")
        slack = self.slack if self.slack is not None else default_slack(select)
        return replace(self, steps=steps, select=select, slack=slack, strength=1.0 if mode == "diffusion" else self.strength,
                       verify=self.verify and mode == "hybrid").validate()


def default_slack(select: str) -> int:
    """Masked slots after the draft when none is set: none when only unsupported claims may change."""
    return 0 if select == "unsupported" else DEFAULT_SLACK


ALIASES = {"refine_steps": ("steps",), "temperature": ("temperature",)}  # keyword -> SamplerConfig fields it also sets


def configs_from(settings: dict, draft_config: DraftConfig | None = None,
                 refine_config: SamplerConfig | None = None) -> tuple[DraftConfig, SamplerConfig]:
    """Both configs from keyword settings by field name (`refine_steps` for SamplerConfig.steps; `temperature` sets
    both), on top of the given configs. An unknown name is refused with the closest known one."""
    draft_names = {f.name for f in fields(DraftConfig)}
    refine_names = {f.name for f in fields(SamplerConfig)} - {"steps", "temperature"}
    draft_changes, refine_changes = {}, {}
    for key, value in settings.items():
        if key in draft_names:
            draft_changes[key] = value
        if key in refine_names:
            refine_changes[key] = value
        for target in ALIASES.get(key, ()):
            refine_changes[target] = value
        if key not in draft_names and key not in refine_names and key not in ALIASES:
            known = sorted(draft_names | refine_names | set(ALIASES))
            close = difflib.get_close_matches(key, known, n=1)
            raise HybridError(f"unknown setting {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return replace(draft_config or DraftConfig(), **draft_changes), replace(refine_config or SamplerConfig(), **refine_changes)
