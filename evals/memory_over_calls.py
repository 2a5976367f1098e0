"""Does memory stay flat over many calls? RSS of one process calling one pipeline again and again.

    .venv/bin/python evals/memory_over_calls.py --calls 300 --max-new-tokens 16 --refine-steps 2

Loads the default pipeline (drafter + shipped refiner), makes a few warm-up calls (allocator pools and caches fill
once), then cycles through short prompts and prints the resident set size at the start, every 50 calls and at the
end, with the growth from start to end. Linux only (reads /proc/self/statm).
"""

from __future__ import annotations

import argparse
import gc
import os
import time

from hybrid import HybridPipeline

PROMPTS = ["The history of Rome", "How do bees make honey?", "Write about the sea.", "Why is the sky blue?",
           "A story about a lighthouse keeper", "The first computers", "Describe a mountain village.", "What is rain?"]


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--refine-steps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    pipe = HybridPipeline.from_pretrained()
    settings = {"max_new_tokens": args.max_new_tokens, "refine_steps": args.refine_steps}
    for i in range(args.warmup):
        pipe(PROMPTS[i % len(PROMPTS)], **settings)
    gc.collect()
    start, started = rss_mb(), time.perf_counter()
    print(f"start (after {args.warmup} warm-up calls): RSS {start:.1f} MB", flush=True)
    peak = start
    for call in range(1, args.calls + 1):
        pipe(PROMPTS[call % len(PROMPTS)], **settings)
        peak = max(peak, rss_mb())
        if call % 50 == 0:
            print(f"after {call} calls: RSS {rss_mb():.1f} MB", flush=True)
    gc.collect()
    end = rss_mb()
    print(f"end: RSS {end:.1f} MB after {args.calls} calls ({time.perf_counter() - started:.0f} s); growth {end - start:+.1f} MB, "
          f"peak {peak:.1f} MB")


if __name__ == "__main__":
    main()
