"""The drafting bench (hybrid.bench.drafting) and dtype "auto" (hybrid.models.resolve_dtype)."""

import torch

from hybrid.drafting.drafter import Drafter
from hybrid.bench.drafting import format_markdown, measure
from hybrid.models import resolve_dtype


def test_drafting_bench_times_every_system_on_the_same_prompts(tiny_model):
    model, tokenizer = tiny_model
    drafter = Drafter(model.to(torch.float64), tokenizer)
    prompts = {"news": [("a", "one two three one two three one two")], "continue": [("b", "The history of Rome")]}
    report = measure(drafter, prompts, ["hf-generate", "plain", "lookup"], 12, "float64")
    for suite in prompts:
        rows = report.suites[suite]
        assert rows["plain"].identical == 1 and rows["lookup"].identical == 1  # greedy speculation writes plain's text
        assert rows["lookup"].tokens == rows["plain"].tokens == 12
        assert rows["plain"].passes == 11 and rows["plain"].tokens_per_pass == 1.0
        assert all(row.seconds > 0 for row in rows.values())
    assert report.suites["news"]["lookup"].passes < 11  # the repeated prompt is proposed and accepted
    assert report.ratio(("news",), "hf-generate") == 1.0
    table = format_markdown([report])
    assert "| float64 | copy-heavy (news, summarize) | lookup |" in table and "none" in table


def test_auto_dtype_follows_the_hardware(monkeypatch):
    import hybrid.models as models

    assert resolve_dtype("bfloat16") == "bfloat16" and resolve_dtype("float32") == "float32"
    monkeypatch.setattr(models, "native_bf16_cpu", lambda: True)
    assert resolve_dtype("auto", "cpu") == "bfloat16"
    monkeypatch.setattr(models, "native_bf16_cpu", lambda: False)
    assert resolve_dtype("auto", "cpu") == "float32"
