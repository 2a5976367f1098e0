"""`hybrid bench` on the tiny random model: every cell is timed, ratios are consistent, the report is written."""

import json

import pytest

from hybrid.bench.run import BenchConfig, run_bench
from hybrid.bench.step_costs import median_time
from hybrid.bench.report import headline, write_report
from hybrid.evaluation.harness.systems import DRAFT, System


def _config(tiny_model_dir, tiny_refiner_dir, **changes):
    base = dict(lengths=[8], steps=[1, 2], batch_sizes=[1, 2], dtypes=["float32"], repeats=2, warmup=1,
                draft_model=str(tiny_model_dir), refiner=str(tiny_refiner_dir), measure_memory=False, cache_refresh=2)
    return BenchConfig(**(base | changes))


@pytest.mark.parametrize("reuse_draft", [False, True])
def test_bench_times_every_cell_and_system(tiny_model_dir, tiny_refiner_dir, tmp_path, reuse_draft):
    report = run_bench(_config(tiny_model_dir, tiny_refiner_dir, reuse_draft=reuse_draft))
    systems = {"draft", "diffusion", "hybrid", "hybrid-cache2"}
    for batch in (1, 2):
        cell = [t for t in report.timings if t.batch == batch]
        assert {t.system.label for t in cell} == systems
        draft = next(t for t in cell if t.system == DRAFT)
        for t in cell:
            assert t.seconds > 0 and t.ratio_to_draft == pytest.approx(t.seconds / draft.seconds)
            if reuse_draft and t.system.mode == "hybrid":
                assert t.seconds > draft.seconds  # the draft's time is part of the hybrid's
            # only a hybrid that drafts in the timed call has a ratio to its own drafting, above 1 (it also refines)
            assert (t.ratio_to_own_draft is not None) == (t.system.mode == "hybrid" and not reuse_draft)
            assert t.ratio_to_own_draft is None or t.ratio_to_own_draft > 1
    assert len(report.step_costs) == 2 and all(c.ar_token_equivalents > 0 for c in report.step_costs)
    paths = write_report(report, tmp_path / "bench")
    data = json.loads(paths["json"].read_text())
    assert data["config"]["reuse_draft"] is reuse_draft
    assert data["headline"]["hybrid_k2_over_draft[float32]"] == pytest.approx(report.ratio("float32", 1, 8, System("hybrid", 2)))
    assert paths["plot"].stat().st_size > 0 and "targets:" in paths["table"].read_text()
    assert headline(report)["new_tokens"] == 8
    # the step the targets read is the default canvas over the bench's tokens (no slack: a cut draft may not grow)
    assert {c.canvas for c in report.step_costs} == {8} and headline(report)["refine_step_ar_equivalents[float32]"] > 0
    own = headline(report).get("hybrid_k2_over_own_draft[float32]")
    hybrid = next(t for t in report.timings if (t.batch, t.system) == (1, System("hybrid", 2)))
    assert own == hybrid.ratio_to_own_draft and (own is None) == reuse_draft


def test_budget_stops_repeating_long_calls():
    calls = []
    median_time(lambda: calls.append(1) or __import__("time").sleep(0.02), repeats=5, warmup=1, budget_s=0.01)
    assert len(calls) == 2  # one warm-up, then one timed run already past the budget
    calls.clear()
    median_time(lambda: calls.append(1), repeats=5, warmup=0, budget_s=0.0)
    assert len(calls) == 5


def test_the_step_split_times_lower_layers_top_layers_and_the_verify_pass(tiny_model, tiny_pipeline):
    """With causal lower layers the step cost has its three parts: a reused step, the lower layers (the full step
    minus the reused one) and a verify pass, each timed; a refiner whose every layer is bidirectional has no split (its
    verify pass is timed all the same)."""
    from types import SimpleNamespace

    from hybrid.bench.step_costs import step_cost
    from hybrid.bench.report import format_table
    from hybrid.refiner import Refiner

    model, _ = tiny_model
    partial = Refiner.create(model, "tiny", lora_r=4, lora_alpha=8, bidirectional_layers=1).eval()
    cost = step_cost(SimpleNamespace(drafter=tiny_pipeline.drafter, refiner=partial), "float32", 1, 16, 1e-3, repeats=2)
    assert cost.reused_step_s > 0 and cost.verify_pass_s > 0
    assert cost.lower_layers_s == pytest.approx(cost.refine_step_s - cost.reused_step_s)
    report = SimpleNamespace(config=BenchConfig(), refiner="tiny", machine={"threads": 2, "torch": "x"}, timings=[], step_costs=[cost],
                             peak_rss_mb=None, peak_gpu_mb=None, decode_bound_s={})
    assert "verify pass for one change" in format_table(report)
    whole = step_cost(tiny_pipeline, "float32", 1, 16, 1e-3, repeats=2)  # the tiny refiner: every layer both ways
    assert whole.reused_step_s is None and whole.lower_layers_s is None and whole.verify_pass_s > 0  # verifying needs no layout
