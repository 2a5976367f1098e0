"""`hybrid eval` killed mid-run resumes to the uninterrupted report, and two processes give the samples of one."""

import json

from child_runs import kill_when, run_hybrid
from hybrid.evaluation.harness.saved import GENERATIONS
from hybrid.atomic import read_records

TIMED = ("total_s", "cost_vs_draft")  # wall-clock: what a rerun may change


def write_suite(tmp_path, prompts=8):
    rows = [{"id": f"r{i}", "prompt": f"Tell me about topic {i}.", "reference": f"Topic {i} is interesting."} for i in range(prompts)]
    (tmp_path / "mine.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    suite = tmp_path / "mine.yaml"
    suite.write_text("name: mine\ntask: continue\ndata:\n  kind: jsonl\n  path: mine.jsonl\nmax_new_tokens: 6\n")
    return suite


def eval_args(suite, out, tiny_model_dir, tiny_refiner_dir):
    return ["eval", str(suite), "--draft-model", str(tiny_model_dir), "--refiner", str(tiny_refiner_dir), "--steps", "1,2",
            "--diffusion-steps", "2", "--batch-size", "2", "--no-judge", "--no-encoders", "--output", str(out)]


def untimed(folder):
    """What a report says apart from wall-clock: every sample's text and scores, every system's means and deltas."""
    data = json.loads((folder / "results.json").read_text())
    samples = [(s["example_id"], s["system"], s["text"], s["draft_text"], s["steps_run"],
                {k: v for k, v in s["scores"].items() if k not in TIMED}) for s in data["samples"]]
    systems = [(s["system"], {k: v for k, v in s["means"].items() if k not in TIMED},
                {k: v for k, v in s["deltas"].items() if k not in TIMED}) for s in data["systems"]]
    return samples, systems


def test_killed_mid_run_then_rerun_gives_the_uninterrupted_report(tmp_path, tiny_model_dir, tiny_refiner_dir):
    suite = write_suite(tmp_path)
    whole, out = tmp_path / "whole", tmp_path / "resumed"
    assert run_hybrid(eval_args(suite, whole, tiny_model_dir, tiny_refiner_dir)).returncode == 0
    saved = out / GENERATIONS
    kill_when(eval_args(suite, out, tiny_model_dir, tiny_refiner_dir), lambda: len(read_records(saved)) >= 12)
    kept = read_records(saved)
    assert 12 <= len(kept) < 8 * 5 and not (out / "results.json").exists()
    finished = run_hybrid(eval_args(suite, out, tiny_model_dir, tiny_refiner_dir))
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert untimed(out) == untimed(whole)
    samples = json.loads((out / "results.json").read_text())["samples"]
    by_key = {(s["example_id"], s["system"]): s for s in samples}
    for record in kept:  # a saved sample was not made again: it keeps the timings measured when it was made
        assert by_key[(record["example_id"], record["system"])]["total_s"] == record["total_s"]
    assert not saved.exists()  # the report is written: the next run measures afresh


def test_changed_settings_are_not_taken_from_an_interrupted_run(tmp_path, tiny_model_dir, tiny_refiner_dir):
    from hybrid.evaluation.harness.saved import SavedSamples
    from hybrid.evaluation.harness.suite import Example
    from hybrid.config import SamplerConfig
    from hybrid.evaluation.harness.systems import DRAFT

    example = Example("r0", "Tell me about topic 0.")
    first = SavedSamples(tmp_path, {"dtype": "float32"})
    first.add([first.record(DRAFT, SamplerConfig(), 0, example, text="saved")])
    assert SavedSamples(tmp_path, {"dtype": "float32"}).get(DRAFT, SamplerConfig(), 0, example)["text"] == "saved"
    assert SavedSamples(tmp_path, {"dtype": "bfloat16"}).get(DRAFT, SamplerConfig(), 0, example) is None
    assert SavedSamples(tmp_path, {"dtype": "float32"}).get(DRAFT, SamplerConfig(strength=0.3), 0, example) is None
    assert SavedSamples(tmp_path, {"dtype": "float32"}).get(DRAFT, SamplerConfig(), 0, Example("r0", "Another prompt")) is None


def test_two_processes_give_the_samples_of_one(tmp_path, tiny_model_dir, tiny_refiner_dir):
    suite = write_suite(tmp_path, prompts=5)
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_hybrid(eval_args(suite, one, tiny_model_dir, tiny_refiner_dir)).returncode == 0
    launched = run_hybrid(eval_args(suite, two, tiny_model_dir, tiny_refiner_dir), processes=2)
    assert launched.returncode == 0, launched.stderr[-2000:]
    assert launched.stdout.count("| hybrid-K2 |") == 1  # only the main process scores, writes and prints the report
    assert untimed(two) == untimed(one)
