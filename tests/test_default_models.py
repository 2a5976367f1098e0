"""The real embedded default drafter (slow: converts/loads SmolLM2-135M). CI runs these too."""

import json

import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.slow

COMMON_WORDS = {"the", "of", "and", "a", "to", "in", "is", "was", "its", "from"}


def test_default_drafter_writes_english():
    from hybrid import HybridPipeline

    pipe = HybridPipeline.from_pretrained(refiner="none")
    result = pipe("The history of Rome", max_new_tokens=24, refine_steps=0)
    words = {w.strip(".,;:").lower() for w in result.text.split()}
    assert len(result.text.split()) >= 10
    assert words & COMMON_WORDS, result.text
    assert "rome" in result.text.lower() or "roman" in result.text.lower()
    assert result.timings.draft_tokens_per_s > 0


def test_cli_json_on_default():
    from hybrid.cli import cli

    result = CliRunner().invoke(cli, ["generate", "The history of Rome", "--refine-steps", "0", "--max-new-tokens", "16", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["mode"] == "draft" and len(data["token_ids"]) == 16 and data["timings"]["draft_s"] > 0
