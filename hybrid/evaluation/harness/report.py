"""Aggregate scored samples into a report: JSON (every sample), a Markdown table, and a quality-vs-time plot.

Deltas to draft only are paired per prompt and carry 95% bootstrap confidence intervals (resampling prompts).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hybrid.errors import HybridError
from hybrid.evaluation.harness.runner import Sample
from hybrid.evaluation.harness.scoring import METRIC_DIRECTION
from hybrid.evaluation.harness.systems import DRAFT, System

BOOTSTRAP_ROUNDS = 1000
MIN_PROMPTS_FOR_INTERVAL = 5  # below this a bootstrap interval means nothing: no verdict is drawn


@dataclass
class Delta:
    mean: float
    low: float
    high: float
    prompts: int


@dataclass
class SystemSummary:
    system: System
    means: dict[str, float | None] = field(default_factory=dict)
    deltas: dict[str, Delta | None] = field(default_factory=dict)  # system - draft, paired per prompt


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def paired_delta(system: dict[str, float], draft: dict[str, float], seed: int = 0) -> Delta | None:
    """Mean of per-prompt differences with a percentile bootstrap interval."""
    ids = [i for i in system if system[i] is not None and draft.get(i) is not None]
    if not ids:
        return None
    diffs = [system[i] - draft[i] for i in ids]
    if len(ids) < MIN_PROMPTS_FOR_INTERVAL:
        return Delta(sum(diffs) / len(diffs), float("nan"), float("nan"), len(ids))
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(diffs, k=len(diffs))) / len(diffs) for _ in range(BOOTSTRAP_ROUNDS))
    return Delta(sum(diffs) / len(diffs), means[int(0.025 * BOOTSTRAP_ROUNDS)], means[int(0.975 * BOOTSTRAP_ROUNDS) - 1], len(ids))


def summarise(samples: list[Sample], systems: list[System]) -> list[SystemSummary]:
    draft_time = {s.example_id: s.total_s for s in samples if s.system == DRAFT}
    for sample in samples:
        sample.scores["total_s"] = sample.total_s
        if draft_time.get(sample.example_id):
            sample.scores["cost_vs_draft"] = sample.total_s / draft_time[sample.example_id]
    metrics = sorted({k for s in samples for k in s.scores}, key=lambda k: list(METRIC_DIRECTION).index(k) if k in METRIC_DIRECTION else 99)
    per_system = {system: {m: {} for m in metrics} for system in systems}
    for sample in samples:
        if sample.system in per_system:
            for metric in metrics:
                per_system[sample.system][metric][sample.example_id] = sample.scores.get(metric)
    summaries = []
    for system in systems:
        if not any(per_system[system][m] for m in metrics):
            continue
        summary = SystemSummary(system, {m: _mean(per_system[system][m].values()) for m in metrics})
        if system != DRAFT:
            summary.deltas = {m: paired_delta(per_system[system][m], per_system[DRAFT][m]) for m in metrics}
        summaries.append(summary)
    return summaries


def _cell(summary: SystemSummary, metric: str) -> str:
    value = summary.means.get(metric)
    if value is None:
        return "n/a"
    text = f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    delta = summary.deltas.get(metric)
    if delta is not None and metric not in ("total_s", "cost_vs_draft"):
        if delta.prompts < MIN_PROMPTS_FOR_INTERVAL:  # no interval: say why instead of printing nan
            text += f" ({delta.mean:+.3f} [{delta.prompts} paired prompt{'s' if delta.prompts != 1 else ''}: too few for a CI])"
        else:
            significant = delta.low > 0 or delta.high < 0
            text += f" ({delta.mean:+.3f} [{delta.low:+.3f}, {delta.high:+.3f}]{'*' if significant else ''})"
    return text


def verdicts(summaries: list[SystemSummary]) -> list[str]:
    """Plain sentences: for each metric, does the best hybrid beat the draft (CI excludes zero), tie, or lose?"""
    lines = []
    hybrids = [s for s in summaries if s.system.mode == "hybrid"]
    for metric, direction in METRIC_DIRECTION.items():
        if direction == 0 or metric in ("total_s", "cost_vs_draft"):
            continue
        deltas = [(s.system.name, s.deltas.get(metric)) for s in hybrids if s.deltas.get(metric) is not None]
        if not deltas:
            continue
        better = [n for n, d in deltas if (d.low > 0 if direction > 0 else d.high < 0)]
        worse = [n for n, d in deltas if (d.high < 0 if direction > 0 else d.low > 0)]
        if better:
            lines.append(f"- {metric}: hybrid is better than draft only for {', '.join(better)} (95% CI excludes 0).")
        elif worse:
            lines.append(f"- {metric}: hybrid is WORSE than draft only for {', '.join(worse)}; no hybrid setting is better.")
        else:
            lines.append(f"- {metric}: no hybrid setting differs from draft only beyond noise.")
    return lines


def markdown(suite_name: str, summaries: list[SystemSummary], header: dict) -> str:
    metrics = [m for m in summaries[0].means if any(s.means.get(m) is not None for s in summaries)]
    lines = [f"# hybrid eval: {suite_name}", ""]
    for key, value in header.items():
        if isinstance(value, dict):  # the metric validations: one line per metric
            lines.append(f"- {key}:")
            for name, figures in value.items():
                shown = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items()
                                  if not isinstance(v, (dict, list, tuple)))
                lines.append(f"  - {name}: {shown}")
        else:
            lines.append(f"- {key}: {value}")
    lines += ["", "Each cell: mean (delta to draft only [95% bootstrap CI], * where the CI excludes 0).",
              "Direction: " + ", ".join(f"{m} {'higher' if METRIC_DIRECTION.get(m, 0) > 0 else 'lower' if METRIC_DIRECTION.get(m, 0) < 0 else '-'}" for m in metrics), ""]
    lines.append("| system | " + " | ".join(metrics) + " |")
    lines.append("|---|" + "---|" * len(metrics))
    for summary in summaries:
        lines.append(f"| {summary.system.name} | " + " | ".join(_cell(summary, m) for m in metrics) + " |")
    lines += ["", "## What the numbers say", "", *verdicts(summaries), ""]
    return "\n".join(lines)


def quality_metric(summaries: list[SystemSummary]) -> str:
    for metric in ("fact_accuracy", "rougeL", "bertscore_f1", "consistency", "judge_perplexity", "unigram_entropy"):
        if any(s.means.get(metric) is not None for s in summaries):
            return metric
    return "words"


def plot(summaries: list[SystemSummary], path: Path, suite_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in ("fact_accuracy", "rougeL", "consistency", "judge_perplexity", "adjacent_similarity", "unigram_entropy")
               if any(s.means.get(m) is not None for s in summaries)][:3] or [quality_metric(summaries)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for summary in summaries:
            x, y = summary.means.get("total_s"), summary.means.get(metric)
            if x is None or y is None:
                continue
            colour = {"draft": "black", "diffusion": "tab:orange"}.get(summary.system.mode, "tab:blue")
            ax.scatter([x], [y], color=colour)
            ax.annotate(summary.system.name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        # One line through the plain (verified, ungrounded) hybrid rows, in order of K.
        hybrids = sorted((s for s in summaries if s.system == System("hybrid", s.system.steps) and s.means.get(metric) is not None),
                         key=lambda s: s.system.steps)
        ax.plot([s.means["total_s"] for s in hybrids], [s.means[metric] for s in hybrids], color="tab:blue", lw=1)
        better = "higher" if METRIC_DIRECTION.get(metric, 0) > 0 else "lower"
        ax.set(xlabel="wall-clock per prompt (s)", ylabel=f"{metric} ({better} is better)", title=f"{suite_name}: {metric}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rerender(folder: Path) -> Path:
    """Write report.md again from a report folder's results.json (after a change to the table's layout)."""
    if not (folder / "results.json").is_file():
        raise HybridError(f"{folder} holds no results.json: run `hybrid eval` into it first")
    data = json.loads((folder / "results.json").read_text())
    summaries = []
    for raw in data["systems"]:
        deltas = {m: Delta(**d) if d else None for m, d in raw["deltas"].items()}
        summaries.append(SystemSummary(System.from_name(raw["system"]), raw["means"], deltas))
    path = folder / "report.md"
    path.write_text(markdown(data["suite"], summaries, data["header"]))
    return path


def _named(row: Sample | SystemSummary) -> dict:
    """A sample or summary as results.json holds it: its system by name."""
    return asdict(row) | {"system": row.system.name}


def write_report(folder: Path, suite_name: str, samples: list[Sample], summaries: list[SystemSummary], header: dict) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "results.json", "markdown": folder / "report.md", "plot": folder / "quality_vs_time.png"}
    data = {"suite": suite_name, "header": header, "systems": [_named(s) for s in summaries], "samples": [_named(s) for s in samples]}
    paths["json"].write_text(json.dumps(data, indent=1) + "\n")
    paths["markdown"].write_text(markdown(suite_name, summaries, header))
    plot(summaries, paths["plot"], suite_name)
    return paths
