"""Drafter tokens/s beside plain `model.generate` on the same model, prompt and length, in one run.

    python evals/bench_draft.py --max-new-tokens 128 --repeats 5

Runs alternate (ours, theirs, ours, ...) after a warm-up so that machine noise hits both alike; medians reported.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from hybrid.drafting.drafter import DraftConfig, Drafter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompt", default="The history of Rome")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()

    drafter = Drafter.from_pretrained(args.model, args.dtype)
    ids, mask = drafter.encode_prompts([args.prompt])
    n = args.max_new_tokens
    config = DraftConfig(max_new_tokens=n, ignore_eos=True)

    def ours() -> float:
        start = time.perf_counter()
        draft = drafter.generate(args.prompt, config)
        assert draft.token_ids.shape[1] == n
        return time.perf_counter() - start

    def theirs() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            out = drafter.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        assert out.shape[1] - ids.shape[1] == n
        return time.perf_counter() - start

    ours(), theirs()  # warm-up
    times = {"drafter": [], "model.generate": []}
    for _ in range(args.repeats):
        times["drafter"].append(ours())
        times["model.generate"].append(theirs())
    rates = {name: n / statistics.median(values) for name, values in times.items()}
    print(f"model {args.model} ({args.dtype}), {n} new tokens, {args.repeats} repeats, median")
    for name, rate in rates.items():
        print(f"  {name:15s} {rate:7.2f} tokens/s")
    print(f"  ratio drafter / model.generate = {rates['drafter'] / rates['model.generate']:.3f}")


if __name__ == "__main__":
    main()
