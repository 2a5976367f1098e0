"""Planted-error repair: can grounded refinement put back a name or number the source supports?

Each reference summary whose claims its source all supports gets one planted error that its source does not support: a number the source holds changed to
another of the same digit count (a year shifted by 1-15 years), or a name word the source holds swapped for a capitalised word of another document. The planted text is given to
the pipeline as a draft (teacher-forced, `pipe.draft_from_text`) and refined with `--select unsupported`, verified.
A repair is exact when the refined text equals the reference; "other tokens changed" counts every token outside the
planted span that the refinement changed.

    .venv/bin/python evals/planted_repair.py --split test          # 60 news + 40 ACLSum test references
    .venv/bin/python evals/planted_repair.py --split validation    # 24 news + 26 ACLSum val (for choosing settings)
"""

from __future__ import annotations

import argparse
import difflib
import json
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hybrid.evaluation.harness.suite import load_examples, load_suite  # noqa: E402
from hybrid.text.claims import NUMBER, entity_mentions, normalise_number, number_values, unsupported_claims  # noqa: E402
from hybrid.text.units import word_tokens  # noqa: E402

SPLITS = {"test": [("news", "test", 60), ("summarize", "test", 40)],
          "validation": [("news", "validation", 24), ("summarize", "val", 26)]}


@dataclass
class Plant:
    id: str
    kind: str  # number | name
    prompt: str
    source: str
    reference: str
    planted: str
    old: str
    new: str
    start: int  # character span of the planted text in `planted`
    end: int


def plant(example, others, rng: random.Random, kind: str) -> Plant | None:
    """One unsupported number or name in the reference, or None when the reference has none of that kind."""
    ref, source = example.reference, example.source
    if kind == "number":
        options = [m for m in NUMBER.finditer(ref)]
        rng.shuffle(options)
        supported = number_values(source, include_words=True)
        for match in options:
            digits = match.group(1)
            if normalise_number(digits) not in supported:  # the source must hold what the repair should put back
                continue
            for _ in range(20):
                if re.fullmatch(r"(1[5-9]|20)\d\d", digits):  # a year stays a year
                    new = str(int(digits) + rng.choice([-1, 1]) * rng.randint(1, 15))
                else:
                    new = "".join(str(rng.randrange(1 if i == 0 and len(digits) > 1 else 0, 10)) if c.isdigit() else c for i, c in enumerate(digits))
                candidate = ref[: match.start(1)] + new + ref[match.end(1):]
                if new != digits and _only_new(candidate, source, match.start(1), match.start(1) + len(new)):
                    return Plant(example.id, kind, example.prompt, source, ref, candidate, digits, new, match.start(1), match.start(1) + len(new))
        return None
    source_words = set(word_tokens(source))
    pool = sorted({w for other in others for m in entity_mentions(other.source) for w in re.findall(r"[A-Z][a-z]{2,}", m.text)
                   if w.lower() not in source_words})
    words = [(m.start + w.start(), m.start + w.end(), w.group(0)) for m in entity_mentions(ref) for w in re.finditer(r"[A-Z][a-z]{2,}", m.text)]
    rng.shuffle(words)
    for start, end, old in words:
        if old.lower() not in source_words or not pool:
            continue
        new = rng.choice(pool)
        candidate = ref[:start] + new + ref[end:]
        if _only_new(candidate, source, start, start + len(new)):
            return Plant(example.id, kind, example.prompt, source, ref, candidate, old, new, start, start + len(new))
    return None


def _only_new(candidate: str, source: str, start: int, end: int) -> bool:
    """The planted span is unsupported (the rest of the reference may have its own unsupported claims)."""
    return any(c.start < end and start < c.end for c in unsupported_claims(candidate, source))


def load_plants(split: str, seed: int = 0) -> list[Plant]:
    plants, rng = [], random.Random(seed)
    for suite_name, data_split, count in SPLITS[split]:
        suite, base = load_suite(suite_name)
        if suite.data.kind == "aclsum":
            suite.data.split = data_split
        else:
            suite.data.path = f"../news/{data_split}.jsonl"
        examples = load_examples(suite, base)
        taken = 0
        for index, example in enumerate(examples):
            if taken == count:
                break
            if unsupported_claims(example.reference, example.source):  # the planted error is to be the one unsupported claim
                continue
            kinds = ["number", "name"] if taken % 2 == 0 else ["name", "number"]
            others = examples[:index] + examples[index + 1:]
            made = next((p for p in (plant(example, others, rng, k) for k in kinds) if p is not None), None)
            if made is not None:
                plants.append(made)
                taken += 1
    return plants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=sorted(SPLITS), default="test")
    parser.add_argument("--refiner", default="summarize")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--ground-weights", default="0", help="comma-separated verify bonuses per token made supported")
    parser.add_argument("--kinds", default="entity,number")
    parser.add_argument("--refill", action="store_true", help="also offer the refiner's own fill of each span (--ground-refill)")
    parser.add_argument("--candidates", type=int, default=3, help="source copies per span (0: the refiner's fill only)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--output", default=None, help="write the figures and every case as JSON here")
    args = parser.parse_args()

    import torch
    from tqdm.auto import tqdm

    from hybrid.pipeline import HybridPipeline

    torch.set_num_threads(2)
    plants = load_plants(args.split)[: args.limit]
    pipe = HybridPipeline.from_pretrained(refiner=args.refiner)
    weights = [float(w) for w in args.ground_weights.split(",")]
    figures = {}
    for weight in weights:
        cases = []
        for start in tqdm(range(0, len(plants), args.batch_size), desc=f"ground weight {weight}"):
            batch = plants[start : start + args.batch_size]
            draft = pipe.draft_from_text([p.prompt for p in batch], [p.planted for p in batch])
            results = pipe([p.prompt for p in batch], max_new_tokens=draft.token_ids.shape[1], draft=draft, refine_steps=args.steps,
                           select="unsupported", source=[p.source for p in batch], ground_weight=weight,
                           ground_kinds=tuple(args.kinds.split(",")), ground_refill=args.refill, ground_candidates=args.candidates,
                           trace=True)
            for row, (p, result) in enumerate(zip(batch, results)):
                cases.append(_case(pipe.tokenizer, p, draft.token_ids[row, : draft.lengths[row]].tolist(), result))
        figures[weight] = _figures(cases)
        figures[weight]["cases"] = cases
        print(json.dumps({k: v for k, v in figures[weight].items() if k != "cases"}), flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps({"split": args.split, "refiner": args.refiner, "steps": args.steps, "kinds": args.kinds,
                                                 "refill": args.refill, "candidates": args.candidates,
                                                 "by_weight": figures}, indent=1))


def _case(tokenizer, p: Plant, planted_ids: list[int], result) -> dict:
    from hybrid.refining.grounded import token_spans

    inside = [s < p.end and p.start < e for s, e in token_spans(tokenizer, planted_ids)]
    touched = [False] * len(planted_ids)  # planted tokens replaced or deleted, or next to an insertion
    for tag, i1, i2, _, _ in difflib.SequenceMatcher(None, planted_ids, result.token_ids, autojunk=False).get_opcodes():
        if tag != "equal":
            for i in range(i1, max(i2, i1 + 1)):
                touched[min(i, len(planted_ids) - 1)] = True
    changed_outside = sum(t and not f for t, f in zip(touched, inside))
    return {"id": p.id, "kind": p.kind, "old": p.old, "new": p.new, "repaired": result.text.strip() == p.reference.strip(),
            "planted_changed": any(t and f for t, f in zip(touched, inside)),
            "other_tokens": len(inside) - sum(inside), "other_changed": changed_outside, "text": result.text,
            "refine_s": result.timings.refine_s, "proposals": result.proposals}


def _figures(cases: list[dict]) -> dict:
    def share(rows):
        return sum(c["repaired"] for c in rows) / len(rows) if rows else None
    others = sum(c["other_tokens"] for c in cases)
    return {"plants": len(cases), "repaired": share(cases), "repaired_numbers": share([c for c in cases if c["kind"] == "number"]),
            "repaired_names": share([c for c in cases if c["kind"] == "name"]),
            "planted_span_changed": sum(c["planted_changed"] for c in cases) / len(cases),
            "other_tokens_changed": sum(c["other_changed"] for c in cases) / others if others else 0.0}


if __name__ == "__main__":
    main()
