"""Side-by-side cost of refiners or refine settings, interleaved in one process: on a machine whose speed drifts between
runs (this 2-core CPU moved by 2x in a day), two bench runs cannot compare them, but alternating them call by call can.

Every refiner gets its own pipeline (the same drafter weights) and its own draft of the same prompts; `--compare
FIELD=A,B` refines that draft once per value of one refine setting (a SamplerConfig field). Each repeat times, for
every refiner in turn, drafting and then refining that draft (`pipe(..., draft=...)`, the refine stage alone) with
each value. Printed per refiner and value: the medians, the refine stage over drafting, (draft + refine) / draft (the
bench's "hybrid over draft only") and how many texts the refinement changed. Run from the project root:

    .venv/bin/python evals/refine_stage.py general general-4-layers --steps 8 --dtype float32 --repeats 5
    .venv/bin/python evals/refine_stage.py general-4-layers --compare min_change_confidence=0,0.5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("refiners", nargs="+", help="shipped names or folders")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compare", default="", help="FIELD=A,B,...: refine each draft once per value of this refine setting")
    args = parser.parse_args()

    from hybrid.bench.step_costs import PROMPTS
    from hybrid.pipeline import HybridPipeline

    field, values = _compared(args.compare)
    prompts = (PROMPTS * args.batch)[: args.batch]
    pipes = {name: HybridPipeline.from_pretrained(refiner=name, dtype=args.dtype) for name in args.refiners}
    settings = dict(max_new_tokens=args.tokens, ignore_eos=True, seed=0)
    cells = [(name, value) for name in pipes for value in values]
    times = {cell: {"draft": [], "refine": []} for cell in cells}
    texts = {}
    for _ in range(args.repeats + 1):  # the first round warms up and is not kept
        for name, pipe in pipes.items():
            start = time.perf_counter()
            draft = pipe.draft(prompts, **settings)
            draft_s = time.perf_counter() - start
            for value in values:
                chosen = {field: value} if field else {}
                results = pipe(prompts, draft=draft, refine_steps=args.steps, **settings, **chosen)
                times[name, value]["draft"].append(draft_s)
                times[name, value]["refine"].append(results[0].timings.refine_s)
                texts[name, value] = sum(r.text != r.draft_text for r in results)
    for (name, value), kept in times.items():
        draft_s, refine_s = (statistics.median(kept[k][1:]) for k in ("draft", "refine"))
        print(json.dumps({"refiner": name, **({field: value} if field else {}), "dtype": args.dtype, "steps": args.steps,
                          "tokens": args.tokens, "batch": args.batch,
                          "draft_s": round(draft_s, 3), "refine_s": round(refine_s, 3),
                          "refine_over_draft": round(refine_s / draft_s, 3), "hybrid_over_draft": round(1 + refine_s / draft_s, 3),
                          "refine_s_all": [round(t, 3) for t in kept["refine"][1:]],
                          "draft_s_all": [round(t, 3) for t in kept["draft"][1:]],
                          "texts_changed": texts[name, value]}))


def _compared(option: str) -> tuple[str, list]:
    """(field, values) from "FIELD=A,B": a SamplerConfig field and its values read as YAML scalars, as a recipe's
    key=value overrides are (0.5, 8, true); ("", [None]) when empty. The pipeline checks each value's range."""
    if not option:
        return "", [None]
    from dataclasses import fields

    import yaml

    from hybrid.config import SamplerConfig

    field, _, listed = option.partition("=")
    names = sorted(f.name for f in fields(SamplerConfig))
    if field not in names or not listed:
        raise SystemExit(f"--compare takes FIELD=A,B with FIELD one of: {', '.join(names)}")
    return field, [yaml.safe_load(text) for text in listed.split(",")]


if __name__ == "__main__":
    main()
