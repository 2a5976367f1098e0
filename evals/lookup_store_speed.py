"""Wall-clock of lookup speculation with and without the lookup store, on validation prompts no report uses.

    python evals/lookup_store_speed.py --per-group 6 --store-blocks 1,2

Drafts each validation prompt (evals/choose_speculation.py's copy-heavy and open groups) with lookup over the prompt
and text alone, and with the store at each `--store-blocks` size, interleaved prompt by prompt and in reversed order in
the second round, so that machine drift hits every setting alike. Prints per group each setting's speed over lookup
without the store and its verify passes; every draft must equal the others token for token.
"""

from __future__ import annotations

import argparse
import json
import time

from choose_speculation import validation_prompts

from hybrid.config import DraftConfig
from hybrid.drafting.drafter import Drafter
from hybrid.drafting.proposals import LookupProposals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-group", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--store-blocks", default="1,2")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    prompts = validation_prompts(args.per_group)
    drafter = Drafter.from_pretrained()
    store = drafter.token_store
    sources = {"text": lambda: LookupProposals()}
    for size in (int(b) for b in args.store_blocks.split(",")):
        sources[f"store-{size}"] = lambda size=size: LookupProposals(store=store, store_block=size)
    config = DraftConfig(max_new_tokens=args.max_new_tokens, ignore_eos=True)
    drafter.generate("warm up", DraftConfig(max_new_tokens=8))
    seconds = {group: dict.fromkeys(sources, 0.0) for group in prompts}
    passes = {group: dict.fromkeys(sources, 0) for group in prompts}
    for round_ in range(args.rounds):
        for group, texts in prompts.items():
            for prompt in texts:
                drafts = []
                for name in (list(sources) if round_ % 2 == 0 else list(reversed(sources))):
                    start = time.perf_counter()
                    draft = drafter.generate(prompt, config, source=sources[name]())
                    seconds[group][name] += time.perf_counter() - start
                    passes[group][name] += draft.speculation.passes
                    drafts.append(draft.token_ids.tolist())
                if any(d != drafts[0] for d in drafts):
                    raise SystemExit(f"a draft of {prompt[:40]!r} differs between the settings")
    for group in prompts:
        print(json.dumps({"group": group, **{name: {"speed_over_text": round(seconds[group]["text"] / seconds[group][name], 3),
                                                    "passes": passes[group][name], "seconds": round(seconds[group][name], 1)}
                                             for name in sources}}))


if __name__ == "__main__":
    main()
