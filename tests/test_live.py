"""Live generation: a per-step callback, a per-token callback, `pipe.stream` and `hybrid generate --stream`."""

import torch
from click.testing import CliRunner

from hybrid.cli import cli

SETTINGS = dict(max_new_tokens=12, refine_steps=4, seed=0, verify=False, ignore_eos=True)


def test_step_callback_fires_every_step_and_its_canvases_follow_the_trace(tiny_pipeline):
    seen = []
    result = tiny_pipeline("The history of Rome", trace=True, callback_on_step_end=lambda step, canvas, changed: seen.append(
        (step, canvas.clone(), changed.clone())), **SETTINGS)
    assert result.steps_run > 0 and [s for s, _, _ in seen] == list(range(1, result.steps_run + 1))
    for (step, canvas, changed), traced in zip(seen, result.trace):
        assert changed[0].nonzero().flatten().tolist() == [c["position"] for c in traced.changes]
    assert seen[-1][1][0, : len(result.token_ids)].tolist() == result.token_ids  # unverified: the last canvas is the text


def test_token_callback_sees_every_draft_token(tiny_pipeline):
    tokens = []
    result = tiny_pipeline("The history of Rome", refine_steps=0, max_new_tokens=8, ignore_eos=True,
                           callback_on_token=lambda t: tokens.append(int(t[0])))
    assert tokens == result.draft_token_ids


def test_stream_yields_the_draft_then_each_step_then_the_same_result(tiny_pipeline):
    events = list(tiny_pipeline.stream("The history of Rome", **SETTINGS))
    plain = tiny_pipeline("The history of Rome", **SETTINGS)
    kinds = [e.kind for e in events]
    assert kinds[-1] == "done" and kinds.count("step") == plain.steps_run
    assert kinds.index("step") > max(i for i, k in enumerate(kinds) if k == "draft")
    assert "".join(e.text for e in events if e.kind == "draft") == plain.draft_text
    assert events[-1].text == plain.text and events[-1].result.token_ids == plain.token_ids


def test_stream_raises_what_the_pipeline_raises(tiny_pipeline):
    import pytest

    from hybrid.errors import HybridError

    with pytest.raises(HybridError, match="strength"):
        list(tiny_pipeline.stream("The history of Rome", strength=2.0, refine_steps=2, max_new_tokens=4))


def test_cli_stream_prints_the_draft_then_the_refined_text(tiny_model_dir, tiny_refiner_dir):
    result = CliRunner().invoke(cli, ["generate", "The history of Rome", "--draft-model", str(tiny_model_dir), "--refiner",
                                      str(tiny_refiner_dir), "--refine-steps", "4", "--max-new-tokens", "10", "--seed", "0",
                                      "--no-verify", "--stream"])
    assert result.exit_code == 0, result.output
    assert result.output.strip()
    both = CliRunner().invoke(cli, ["generate", "x", "--stream", "--json"])
    assert both.exit_code == 2 and "--stream" in both.output
