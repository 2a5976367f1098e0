"""The command line through click's runner: exit codes, JSON shape, one-line errors."""

import json

import pytest
from click.testing import CliRunner

from hybrid import __version__
from hybrid.cli import cli


def run(*args, input=None):
    return CliRunner().invoke(cli, list(args), input=input)


def test_version_and_help():
    assert __version__ in run("--version").output
    result = run("--help")
    assert result.exit_code == 0 and "generate" in result.output
    assert "--refine-steps" in run("generate", "--help").output


def test_help_lists_each_command_once():
    listed = [line.split()[0] for line in run("--help").output.split("Commands:", 1)[1].splitlines() if line.startswith("  ")]
    assert sorted(listed) == sorted(cli.commands) and len(listed) == len(set(listed)) == len(cli.commands)
    assert run("--help").output.count("lm-evaluation-harness") == 1


def test_generate_json(tiny_model_dir):
    result = run("generate", "The history of Rome", "--draft-model", str(tiny_model_dir), "--refine-steps", "0", "--max-new-tokens", "6", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["prompt"] == "The history of Rome" and data["mode"] == "draft"
    assert isinstance(data["text"], str) and len(data["token_ids"]) <= 6
    assert {"draft_s", "draft_tokens_per_s", "refine_s", "total_s", "load_s"} <= set(data["timings"])


def test_generate_with_refiner_and_trace(tiny_model_dir, tiny_refiner_dir):
    result = run("generate", "The history of Rome", "--draft-model", str(tiny_model_dir), "--refiner", str(tiny_refiner_dir),
                 "--refine-steps", "4", "--max-new-tokens", "8", "--show-trace", "--seed", "0")
    assert result.exit_code == 0, result.output
    assert "draft:" in result.output and "refined:" in result.output and "step 1:" in result.output


def test_prompt_from_file_and_stdin(tiny_model_dir, tmp_path):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Once upon a time")
    from_file = run("generate", "--file", str(prompt), "--draft-model", str(tiny_model_dir), "--refine-steps", "0", "--max-new-tokens", "3", "--json")
    from_stdin = run("generate", "--draft-model", str(tiny_model_dir), "--refine-steps", "0", "--max-new-tokens", "3", "--json", input="Once upon a time")
    assert from_file.exit_code == 0 and from_stdin.exit_code == 0
    assert json.loads(from_file.output)["prompt"] == json.loads(from_stdin.output)["prompt"] == "Once upon a time"


@pytest.mark.parametrize(
    "args, message",
    [
        (["generate", ""], "empty"),
        (["generate", "x", "--max-new-tokens", "-3"], "max-new-tokens"),
        (["generate", "x", "--strength", "1.5"], "strength"),
        (["generate", "x", "--refine-steps", "100000"], "refine-steps"),
        (["generate", "--file", "/no/such/file"], "cannot read"),
        (["generate", "x", "--draft-model", "nobody/no-such-model"], "not installed locally"),
        (["generate", "x", "--draft-model", "./no/such/folder"], "does not exist"),
        (["generate", "x", "--refine-steps", "8", "--refiner", "/no/such/refiner"], "does not exist"),
        (["generate", "x", "--bogus-flag"], "bogus"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = run(*args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert "Traceback" not in result.output


def test_refiner_for_another_base_is_refused(tiny_refiner_dir, tmp_path, default_tokenizer):
    from tiny import build_tiny_llama

    other = build_tiny_llama(len(default_tokenizer), seed=9)
    other.save_pretrained(tmp_path / "other")
    default_tokenizer.save_pretrained(tmp_path / "other")
    result = run("generate", "x", "--draft-model", str(tmp_path / "other"), "--refiner", str(tiny_refiner_dir), "--refine-steps", "2")
    assert result.exit_code == 2 and "trained for base model" in result.output


def test_too_long_prompt(tiny_model_dir):
    result = run("generate", "word " * 300, "--draft-model", str(tiny_model_dir), "--refine-steps", "0")
    assert result.exit_code == 2 and "context" in result.output


def test_generate_defaults_are_the_pipelines():
    """The CLI's defaults are the configs' own (what `pipe(prompt)` uses), for every refine and draft setting."""
    from hybrid.cli import generate
    from hybrid.config import DraftConfig, SamplerConfig

    for cls in (DraftConfig, SamplerConfig):
        for name in ("min_change_confidence", "verify", "verify_weight", "verify_window", "product", "strength", "max_new_tokens",
                     "top_p", "ground_weight", "ground_candidates", "cache_refresh"):
            option = next((p for p in generate.params if p.name == name), None)
            if hasattr(cls(), name):
                assert option is not None and option.default == getattr(cls(), name), name
    kinds = next(p for p in generate.params if p.name == "ground_kinds")
    assert kinds.default == ",".join(SamplerConfig().ground_kinds)
