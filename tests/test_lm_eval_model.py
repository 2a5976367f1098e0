"""The hybrid as an lm-evaluation-harness model: simple_evaluate on a tiny random model and a two-line local task."""

import json

import pytest

lm_eval = pytest.importorskip("lm_eval")


def test_simple_evaluate_runs_generation_and_likelihood_tasks(tiny_pipeline, tmp_path):
    from lm_eval.tasks import TaskManager

    from hybrid.evaluation.lm_eval_model import HybridLM

    (tmp_path / "two.jsonl").write_text("\n".join(json.dumps({"prompt": p, "answer": a}) for p, a in
                                                  [("The capital of France is", " Paris"), ("Two plus two is", " four")]))
    (tmp_path / "utils.py").write_text(
        "import json, datasets, pathlib\n"
        "def load(**_):\n"
        "    rows = [json.loads(l) for l in (pathlib.Path(__file__).parent / 'two.jsonl').read_text().splitlines()]\n"
        "    return datasets.DatasetDict({'test': datasets.Dataset.from_list(rows)})\n")
    common = "dataset_path: json\ncustom_dataset: !function utils.load\ntest_split: test\ndoc_to_text: '{{prompt}}'\ndoc_to_target: '{{answer}}'\n"
    (tmp_path / "gen.yaml").write_text("task: two_gen\noutput_type: generate_until\n" + common +
                                       "generation_kwargs:\n  until: ['.']\n  max_gen_toks: 6\nmetric_list:\n  - metric: exact_match\n")
    (tmp_path / "ll.yaml").write_text("task: two_ll\noutput_type: loglikelihood\n" + common + "metric_list:\n  - metric: acc\n")
    model = HybridLM(pipeline=tiny_pipeline, refine_steps=2)
    results = lm_eval.simple_evaluate(model=model, tasks=["two_gen", "two_ll"], task_manager=TaskManager(include_path=str(tmp_path)))
    assert set(results["results"]) == {"two_gen", "two_ll"}
    assert 0.0 <= results["results"]["two_ll"]["acc,none"] <= 1.0
    generated = results["samples"]["two_gen"] if "samples" in results else None
    assert generated is None or len(generated) == 2


def test_generations_are_cut_at_the_stop_strings_again():
    from hybrid.evaluation.lm_eval_model import cut_at

    assert cut_at("Paris. And more\n\nlater", ["\n\n", "."]) == "Paris"
    assert cut_at("no stop here", ["\n\n"]) == "no stop here"


def test_likelihoods_are_the_drafters(tiny_pipeline):
    import torch

    from hybrid.evaluation.lm_eval_model import HybridLM

    model = HybridLM(pipeline=tiny_pipeline)
    ids = tiny_pipeline.tokenizer("Hello there friend", add_special_tokens=False).input_ids
    logp, _ = model._score(ids[:1], ids[1:])
    with torch.no_grad(), tiny_pipeline._drafting():
        logits = tiny_pipeline.drafter.model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
    expected = sum(float(logits[i - 1, ids[i]]) for i in range(1, len(ids)))
    assert abs(logp - expected) < 1e-4


def test_two_processes_give_the_generations_and_metrics_of_one(tmp_path, tiny_model_dir, tiny_refiner_dir):
    from child_runs import run_hybrid

    rows = [("The capital of France is", " Paris"), ("Two plus two is", " four"), ("The sky is", " blue"),
            ("Water is", " wet"), ("Bees make", " honey")]
    (tmp_path / "five.jsonl").write_text("\n".join(json.dumps({"prompt": p, "answer": a}) for p, a in rows))
    (tmp_path / "utils.py").write_text(
        "import json, datasets, pathlib\n"
        "def load(**_):\n"
        "    rows = [json.loads(l) for l in (pathlib.Path(__file__).parent / 'five.jsonl').read_text().splitlines()]\n"
        "    return datasets.DatasetDict({'test': datasets.Dataset.from_list(rows)})\n")
    (tmp_path / "gen.yaml").write_text(
        "task: five_gen\noutput_type: generate_until\ndataset_path: json\ncustom_dataset: !function utils.load\ntest_split: test\n"
        "doc_to_text: '{{prompt}}'\ndoc_to_target: '{{answer}}'\ngeneration_kwargs:\n  until: ['.']\n  max_gen_toks: 6\n"
        "metric_list:\n  - metric: exact_match\n")

    def run(processes):
        out = tmp_path / f"out{processes}"
        done = run_hybrid(["lm-eval", "run", "--model", "hybrid", "--model_args",
                           f"draft_model={tiny_model_dir},refiner={tiny_refiner_dir},refine_steps=2", "--device", "cpu", "--tasks", "five_gen",
                           "--include_path", str(tmp_path), "--output_path", str(out), "--log_samples"], processes)
        assert done.returncode == 0, done.stderr[-3000:]
        results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]["five_gen"]
        samples = [json.loads(line) for line in next(out.rglob("samples_five_gen_*.jsonl")).read_text().splitlines()]
        return results["exact_match,none"], sorted((s["doc_id"], s["resps"][0][0]) for s in samples)

    one, two = run(1), run(2)
    assert len(one[1]) == 5 and two == one
