"""`hybrid eval`: suite files, the report's statistics, and a whole run on tiny models with a user's own suite."""

import json

import pytest
from click.testing import CliRunner

from hybrid.cli import cli
from hybrid.errors import HybridError
from hybrid.evaluation.harness.report import paired_delta, summarise
from hybrid.evaluation.harness.runner import EvalConfig, Sample, eval_systems
from hybrid.evaluation.harness.suite import load_examples, load_suite
from hybrid.evaluation.harness.systems import DRAFT, System


def write_suite(tmp_path, extra=""):
    rows = [{"id": f"r{i}", "prompt": f"Tell me about topic {i}.", "reference": f"Topic {i} is interesting."} for i in range(3)]
    (tmp_path / "mine.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    suite = tmp_path / "mine.yaml"
    suite.write_text(f"name: mine\ntask: continue\ndata:\n  kind: jsonl\n  path: mine.jsonl\nmax_new_tokens: 6\n{extra}")
    return suite


def test_shipped_suites_load():
    for name in ("summarize", "facts", "continue"):
        suite, base = load_suite(name)
        examples = load_examples(suite, base, limit=5)
        assert len(examples) == 5 and all(e.prompt for e in examples)
    facts, base = load_suite("facts")
    assert len(load_examples(facts, base)) >= 100


def test_unknown_key_names_the_closest(tmp_path):
    suite = write_suite(tmp_path, "max_new_token: 5\n")
    with pytest.raises(HybridError, match="unknown key 'max_new_token'.*max_new_tokens"):
        load_suite(str(suite))


def test_missing_suite_lists_known_ones():
    with pytest.raises(HybridError, match="summarize"):
        load_suite("no-such-suite")


def test_bootstrap_interval_excludes_zero_only_for_real_differences():
    draft = {str(i): 0.0 for i in range(30)}
    better = paired_delta({str(i): 1.0 + 0.1 * (i % 3) for i in range(30)}, draft)
    noise = paired_delta({str(i): (1.0 if i % 2 else -1.0) for i in range(30)}, draft)
    assert better.low > 0 and better.mean == pytest.approx(1.1, abs=0.01)
    assert noise.low < 0 < noise.high


def test_summaries_are_paired_by_prompt():
    hybrid_k8 = System("hybrid", 8)
    samples = [Sample(str(i), system, "p", "t", None, 0, 1.0, 0.0, 1.0 if system == DRAFT else 2.0, {"rougeL": score})
               for i in range(5) for system, score in ((DRAFT, 0.2), (hybrid_k8, 0.3))]
    summaries = summarise(samples, [DRAFT, hybrid_k8])
    hybrid = summaries[1]
    assert hybrid.means["rougeL"] == pytest.approx(0.3)
    assert hybrid.deltas["rougeL"].mean == pytest.approx(0.1)
    assert hybrid.means["cost_vs_draft"] == pytest.approx(2.0)


def test_eval_on_a_users_suite_end_to_end(tmp_path, tiny_model_dir, tiny_refiner_dir):
    suite = write_suite(tmp_path)
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["eval", str(suite), "--draft-model", str(tiny_model_dir), "--refiner", str(tiny_refiner_dir),
                                      "--steps", "1,2", "--diffusion-steps", "2", "--no-judge", "--no-encoders", "--output", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    systems = {s["system"] for s in data["samples"]}
    assert systems == {"draft", "diffusion-K2", "hybrid-K1", "hybrid-K2", "hybrid-K8-unverified"}
    assert len(data["samples"]) == 3 * 5
    assert all("rougeL" in s["scores"] and "unigram_entropy" in s["scores"] for s in data["samples"])
    assert "| hybrid-K2 |" in (out / "report.md").read_text()
    assert (out / "quality_vs_time.png").stat().st_size > 1000
    before = (out / "report.md").read_text()
    (out / "report.md").unlink()
    rebuilt = CliRunner().invoke(cli, ["eval", "x", "--report-only", "--output", str(out)])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert (out / "report.md").read_text() == before  # the report can be rebuilt from results.json alone
    missing = CliRunner().invoke(cli, ["eval", "x", "--report-only", "--output", str(tmp_path / "none")])
    assert missing.exit_code == 2 and "holds no results.json" in missing.output


def test_eval_bad_suite_is_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["eval", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and result.output.startswith("error:") and len(result.output.strip().splitlines()) == 1


def test_too_few_prompts_give_no_verdict():
    draft = {str(i): 0.0 for i in range(3)}
    delta = paired_delta({str(i): 1.0 for i in range(3)}, draft)
    assert delta.mean == 1.0 and not (delta.low > 0) and not (delta.high < 0)


def test_a_cell_with_too_few_prompts_says_so_instead_of_nan():
    from hybrid.evaluation.harness.report import SystemSummary, _cell

    draft = {str(i): 0.0 for i in range(2)}
    summary = SystemSummary(System("hybrid", 8), {"rouge1": 0.5}, {"rouge1": paired_delta({str(i): 0.5 for i in range(2)}, draft)})
    cell = _cell(summary, "rouge1")
    assert "nan" not in cell and "2 paired prompts: too few for a CI" in cell


def test_system_names_are_the_report_strings_and_read_back():
    from hybrid.config import DEFAULT_REFINE_STEPS

    names = ["draft", "diffusion-K8", "hybrid-K4", "hybrid-K8-unverified", f"hybrid-K{DEFAULT_REFINE_STEPS}-grounded"]
    config = EvalConfig(hybrid_steps=[4], diffusion_steps=8)
    assert [s.name for s in eval_systems(config, grounded=True)] == names
    assert all(System.from_name(name).name == name for name in names + ["hybrid-K8-cache4"])
    assert System("hybrid", 8, cache_refresh=4).label == "hybrid-cache4" and DRAFT.label == "draft"


def test_each_system_runs_the_base_settings_with_its_own_k_verification_and_selection():
    from hybrid.config import SamplerConfig

    base = SamplerConfig(strength=0.3, verify_window=5, ground_weight=1.5)
    hybrid = System("hybrid", 4).refine_config(base)
    assert (hybrid.steps, hybrid.strength, hybrid.verify, hybrid.select, hybrid.verify_window) == (4, 0.3, True, "auto", 5)
    unverified = System("hybrid", 8, verified=False).refine_config(base)
    assert (unverified.verify, unverified.min_change_confidence, unverified.shortlist) == (False, 0.0, 0)  # every proposal kept
    assert hybrid.min_change_confidence == base.min_change_confidence > 0  # the default guard holds in the verified rows
    grounded = System("hybrid", 2, grounded=True).refine_config(base)
    assert (grounded.select, grounded.ground_weight, grounded.verify) == ("unsupported", 1.5, True)
    assert DRAFT.refine_config(base).steps == 0
    assert System("hybrid", 8, cache_refresh=4).refine_config(base).cache_refresh == 4
    assert base.steps is None and base.select == "auto"  # the base is not changed


def test_eval_drafts_with_the_speculation_asked_for(tiny_pipeline):
    from dataclasses import replace
    from types import SimpleNamespace

    from hybrid.config import DraftConfig
    from hybrid.evaluation.harness.runner import generate_samples
    from hybrid.evaluation.harness.suite import Example

    seen = []
    run = tiny_pipeline.__class__.__call__

    class Spy:  # the tiny pipeline, drafting only, noting each draft config it is given
        refiner = None

        def draft(self, prompts, config):
            seen.append(config.speculate)
            return tiny_pipeline.draft(prompts, config)

        def __call__(self, prompts, draft_config=None, **kwargs):
            seen.append(draft_config.speculate)
            return run(tiny_pipeline, prompts, draft_config=draft_config, **{**kwargs, "refine_steps": 0, "mode": "draft"})

    suite = SimpleNamespace(name="mine", max_new_tokens=6, task="continue")
    examples = [Example("a", "Tell me about the sea.")]
    for speculate in ("off", "lookup"):
        seen.clear()
        config = EvalConfig(draft=replace(DraftConfig(), speculate=speculate), batch_size=1)
        samples = generate_samples(Spy(), suite, examples, config)
        assert samples and set(seen) == {speculate}
    result = CliRunner().invoke(cli, ["eval", "--help"])
    assert "--speculate" in result.output and "--speculate" in CliRunner().invoke(cli, ["bench", "--help"]).output
