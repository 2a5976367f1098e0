"""Serialised calls against micro-batching: what a pipeline shared by a thread pool gains by merging calls.

    .venv/bin/python evals/concurrency_throughput.py --requests 8 --max-new-tokens 32

Times N requests sent at once by N threads to one pipeline (each call runs alone, under the pipeline's lock) against
the same N prompts as one batched call (the best a micro-batcher that merged them could do), and checks whether the
batched texts equal the texts of the calls made alone: a micro-batcher must not change results. Prints one line each.
"""

from __future__ import annotations

import argparse
import threading
import time

from hybrid import HybridPipeline

PROMPTS = ["The history of Rome", "How do bees make honey?", "Write about the sea.", "Explain photosynthesis briefly.",
           "A story about a lighthouse keeper", "Why is the sky blue?", "The first computers", "Describe a mountain village."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--refine-steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.requests)]
    settings = {"max_new_tokens": args.max_new_tokens, "refine_steps": args.refine_steps}
    pipe = HybridPipeline.from_pretrained()
    pipe(prompts[0], **settings)  # warm up
    alone = [pipe(p, **settings).text for p in prompts]
    threaded_s, batched_s = [], []
    for _ in range(args.repeats):
        texts = [None] * len(prompts)

        def call(i):
            texts[i] = pipe(prompts[i], **settings).text

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(prompts))]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        threaded_s.append(time.perf_counter() - start)
        assert texts == alone, "a threaded call differs from the same call made alone"
        start = time.perf_counter()
        batched = [r.text for r in pipe(prompts, **settings)]
        batched_s.append(time.perf_counter() - start)
    same = sum(a == b for a, b in zip(alone, batched))
    print(f"{args.requests} threads, one call each (serialised): {min(threaded_s):.2f} s, {args.requests / min(threaded_s):.2f} requests/s")
    print(f"the same prompts as one batch (micro-batched): {min(batched_s):.2f} s, {args.requests / min(batched_s):.2f} requests/s")
    print(f"batched texts equal to the texts made alone: {same} of {len(prompts)}")


if __name__ == "__main__":
    main()
