"""The drafting bench (hybrid.bench.drafting) and dtype "auto" (hybrid.models.resolve_dtype)."""

import torch

from hybrid.config import DraftConfig
from hybrid.drafting.drafter import Drafter
from hybrid.drafting.token_store import TokenStore
from hybrid.bench.drafting import format_markdown, measure
from hybrid.models import resolve_dtype


class Counting(TokenStore):
    calls = 0

    def continuation(self, *args, **kwargs):
        self.calls += 1
        return super().continuation(*args, **kwargs)


def test_drafting_bench_times_every_system_on_the_same_prompts(tiny_model):
    model, tokenizer = tiny_model
    drafter = Drafter(model.to(torch.float64), tokenizer)
    prompts = {"news": [("a", "one two three one two three one two")], "continue": [("b", "The history of Rome")]}
    plain_ids = drafter.generate("The history of Rome", DraftConfig(max_new_tokens=12, ignore_eos=True, speculate="off")).token_ids
    drafter.token_store = Counting.from_sequences([plain_ids[0].tolist()], "tiny", tokenizer)  # what the open prompt will write
    measure(drafter, {"continue": prompts["continue"]}, ["lookup-text"], 12, "float64")
    assert drafter.token_store.calls == 0  # lookup-text reads the prompt and text alone
    report = measure(drafter, prompts, ["hf-generate", "plain", "lookup-text", "lookup"], 12, "float64")
    for suite in prompts:
        rows = report.suites[suite]
        assert rows["plain"].identical == rows["lookup"].identical == rows["lookup-text"].identical == 1  # plain's text
        assert rows["lookup"].tokens == rows["plain"].tokens == 12
        assert rows["plain"].passes == 11 and rows["plain"].tokens_per_pass == 1.0
        assert all(row.seconds > 0 for row in rows.values())
    assert report.suites["news"]["lookup"].passes < 11  # the repeated prompt is proposed and accepted
    assert drafter.token_store.calls > 0  # lookup reads the drafter's store too
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


def test_hf_rows_run_on_the_stock_model_and_the_packed_row_on_ours(tiny_model_dir):
    from hybrid.drafting.packed_weights import is_packed

    drafter, stock = Drafter.from_pretrained(str(tiny_model_dir)), Drafter.from_pretrained(str(tiny_model_dir), pack_weights=False)
    assert is_packed(drafter.model) and not is_packed(stock.model)
    calls = []
    generate = stock.model.generate
    stock.model.generate = lambda **kwargs: calls.append(kwargs) or generate(**kwargs)
    prompts = {"news": [("a", "one two three one two three")]}
    report = measure(drafter, prompts, ["hf-generate", "hf-prompt-lookup", "hf-generate-packed", "plain"], 8, "float32", stock=stock)
    assert len(calls) == 2  # hf-generate and hf-prompt-lookup; hf-generate-packed ran on the packed drafter's model
    assert all(report.suites["news"][name].tokens == 8 for name in ("hf-generate", "hf-generate-packed", "plain"))
