"""`hybrid generate --input FILE --output FILE`: batches, per-prompt settings, one-line errors, resuming after a crash."""

import json

from click.testing import CliRunner

from child_runs import kill_when, run_hybrid
from hybrid.cli import cli
from hybrid.atomic import append_records, read_records

PROMPTS = [{"prompt": f"Tell me about topic {i}.", **({"max_new_tokens": 4} if i % 3 == 0 else {})} for i in range(7)]


def write_input(path, rows=PROMPTS, extra=""):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n" + extra)
    return path


def models(tiny_model_dir, tiny_refiner_dir):
    return ["--draft-model", str(tiny_model_dir), "--refiner", str(tiny_refiner_dir), "--max-new-tokens", "8", "--refine-steps", "2"]


def texts(path):
    return [(r["line"], r["prompt"], r["text"], r["draft_text"]) for r in read_records(path)]


def generate(args):
    return CliRunner().invoke(cli, ["generate", *args])


def test_every_prompt_in_input_order_with_its_own_settings(tmp_path, tiny_model_dir, tiny_refiner_dir):
    source = write_input(tmp_path / "prompts.jsonl")
    out = tmp_path / "results.jsonl"
    result = generate(["--input", str(source), "--output", str(out), "--batch-size", "2", *models(tiny_model_dir, tiny_refiner_dir)])
    assert result.exit_code == 0, result.output
    assert "wrote 7 results" in result.output
    records = read_records(out)
    assert [r["line"] for r in records] == list(range(1, 8)) and [r["prompt"] for r in records] == [p["prompt"] for p in PROMPTS]
    assert all(len(r["draft_token_ids"]) <= (4 if i % 3 == 0 else 8) for i, r in enumerate(records))
    assert all(r["refine_steps"] == 2 and "timings" in r for r in records)
    again = generate(["--input", str(source), "--output", str(out), *models(tiny_model_dir, tiny_refiner_dir)])
    assert again.exit_code == 0 and "wrote 0 results" in again.output and read_records(out) == records  # all done: nothing redone


def test_a_bad_line_is_one_error_naming_it_and_nothing_written_is_lost(tmp_path, tiny_model_dir, tiny_refiner_dir):
    out = tmp_path / "results.jsonl"
    append_records(out, [{"line": 1, "prompt": PROMPTS[0]["prompt"], "text": "kept"}])
    before = out.read_bytes()
    for bad, says in [('{"prompt": "x", "max_new_token": 5}', "line 8: unknown setting 'max_new_token'"),
                      ('{"prompt": "x", "strength": 2}', "line 8: strength must be in"),
                      ('{"source": "no prompt"}', 'line 8: no "prompt"'),
                      ('{"prompt": "x", "mode": "sideways"}', "line 8: unknown mode"),
                      ('not json', "line 8: not JSON")]:
        source = write_input(tmp_path / "prompts.jsonl", extra=bad + "\n")
        result = generate(["--input", str(source), "--output", str(out), *models(tiny_model_dir, tiny_refiner_dir)])
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error:") and says in result.output and len(result.output.strip().splitlines()) == 1
        assert out.read_bytes() == before
    other = write_input(tmp_path / "other.jsonl", [{"prompt": "Something else"}])
    result = generate(["--input", str(other), "--output", str(out), *models(tiny_model_dir, tiny_refiner_dir)])
    assert result.exit_code == 2 and "line 1 is not the result of input line 1" in result.output
    assert generate(["--input", str(other)]).exit_code == 2  # --input needs --output


def test_a_prompt_the_model_cannot_take_is_pinned_to_its_line(tmp_path, tiny_model_dir, tiny_refiner_dir):
    rows = PROMPTS[1:3] + [{"prompt": "Fine."}, {"prompt": "word " * 400}]  # beyond the tiny model's context of 256
    source = write_input(tmp_path / "prompts.jsonl", rows)
    out = tmp_path / "results.jsonl"
    result = generate(["--input", str(source), "--output", str(out), "--batch-size", "2", *models(tiny_model_dir, tiny_refiner_dir)])
    assert result.exit_code == 2 and "line 4:" in result.output and "context" in result.output, result.output
    assert [r["line"] for r in read_records(out)] == [1, 2]  # the batch before it was written, not its own batch-mate


def test_a_torn_last_line_is_cut_off_and_the_rest_resumed(tmp_path, tiny_model_dir, tiny_refiner_dir):
    source = write_input(tmp_path / "prompts.jsonl")
    whole, out = tmp_path / "whole.jsonl", tmp_path / "results.jsonl"
    args = ["--input", str(source), "--batch-size", "2", *models(tiny_model_dir, tiny_refiner_dir)]
    assert generate([*args, "--output", str(whole)]).exit_code == 0
    lines = whole.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:3]) + lines[3][:20])  # a crash in the middle of line 4 (and of the second batch)
    result = generate([*args, "--output", str(out)])
    assert result.exit_code == 0 and "wrote 4 results" in result.output, result.output
    assert texts(out) == texts(whole)
    assert read_records(out)[:3] == read_records(whole)[:3]  # the finished lines were kept, timings and all


def test_killed_mid_run_then_rerun_gives_the_uninterrupted_results(tmp_path, tiny_model_dir, tiny_refiner_dir):
    rows = [{"prompt": f"Tell me about topic {i}."} for i in range(12)]
    source = write_input(tmp_path / "prompts.jsonl", rows)
    whole, out = tmp_path / "whole.jsonl", tmp_path / "results.jsonl"
    args = ["generate", "--input", str(source), "--batch-size", "2", *models(tiny_model_dir, tiny_refiner_dir)]
    assert run_hybrid([*args, "--output", str(whole)]).returncode == 0
    kill_when([*args, "--output", str(out)], lambda: out.exists() and out.read_bytes().count(b"\n") >= 4)
    kept = read_records(out)
    assert 4 <= len(kept) < 12
    finished = run_hybrid([*args, "--output", str(out)])
    assert finished.returncode == 0 and f"wrote {12 - len(kept)} results" in finished.stdout, finished.stderr
    assert texts(out) == texts(whole)
    assert read_records(out)[: len(kept)] == kept


def test_two_processes_give_the_results_of_one(tmp_path, tiny_model_dir, tiny_refiner_dir):
    source = write_input(tmp_path / "prompts.jsonl")
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    args = ["generate", "--input", str(source), "--batch-size", "2", *models(tiny_model_dir, tiny_refiner_dir)]
    assert run_hybrid([*args, "--output", str(one)]).returncode == 0
    launched = run_hybrid([*args, "--output", str(two)], processes=2)
    assert launched.returncode == 0, launched.stderr[-2000:]
    assert launched.stdout.count("wrote 7 results") == 1  # only the main process writes and prints
    assert texts(two) == texts(one)
