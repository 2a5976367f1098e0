"""Does a change keep behaviour? The token ids of eight generate settings on the default models, recorded or checked.

    .venv/bin/python evals/same_behaviour.py --write evals/defaults/behaviour.json   # record (before a change)
    .venv/bin/python evals/same_behaviour.py --check evals/defaults/behaviour.json   # compare (after it)

The settings: the default hybrid (K 2) on an open prompt, K 8, draft only with and without speculation, grounded
repair against a news report from the validation split (one it changes), K 4 unverified, diffusion only, and sampling
with a seed. Each records the draft's and the final text's token ids (float32, CPU). `--check` prints every setting that differs and exits 1.

    .venv/bin/hybrid eval continue --limit 24 --steps 2,8 --no-judge --no-encoders --output runs/check/continue
    .venv/bin/python evals/same_behaviour.py --reports runs/check                    # texts against evals/reports/

`--reports` compares the texts of rebuilt reports with the committed reports of the same name, sample by sample.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hybrid import HybridPipeline

OPEN = "The history of Rome"
NEWS = json.loads((Path(__file__).parent / "news" / "validation.jsonl").read_text().splitlines()[3])["source"]
SETTINGS = {
    "hybrid-default": (OPEN, {}),
    "hybrid-k8": (OPEN, {"refine_steps": 8}),
    "draft-speculative": ("Repeat after me: the quick brown fox jumps over the lazy dog. The quick", {"refine_steps": 0}),
    "draft-plain": ("Repeat after me: the quick brown fox jumps over the lazy dog. The quick", {"refine_steps": 0, "speculate": "off"}),
    "grounded": ("Summarize the report in two sentences.\n\n" + NEWS, {"select": "unsupported"}),
    "refine-unverified": (OPEN, {"refine_steps": 4, "verify": False}),
    "diffusion": (OPEN, {"mode": "diffusion", "refine_steps": 4, "max_new_tokens": 24}),
    "sampled": ("Write about the sea.", {"temperature": 0.8, "top_p": 0.9, "seed": 3, "refine_steps": 2}),
}


def record(pipe: HybridPipeline, max_new_tokens: int) -> dict:
    found = {}
    for name, (prompt, settings) in SETTINGS.items():
        settings = {"max_new_tokens": max_new_tokens, **settings}
        result = pipe(prompt, **settings)
        found[name] = {"settings": settings, "draft_token_ids": result.draft_token_ids, "token_ids": result.token_ids,
                       "text": result.text}
    return found


def same_report_texts(folder: Path) -> bool:
    """Each rebuilt report's samples against the committed report's samples of the same example and system."""
    same = True
    for rebuilt in sorted(folder.glob("*/results.json")):
        committed = Path(__file__).parent / "reports" / rebuilt.parent.name / "results.json"
        texts = {(s["example_id"], s["system"]): s["text"] for s in json.loads(committed.read_text())["samples"]}
        samples = json.loads(rebuilt.read_text())["samples"]
        differ = [s for s in samples if texts.get((s["example_id"], s["system"])) != s["text"]]
        print(f"{rebuilt.parent.name}: {len(samples) - len(differ)} of {len(samples)} texts equal the committed report's")
        for s in differ[:5]:
            print(f"  differs: {s['example_id']} {s['system']}")
        same &= not differ
    return same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--write", type=Path, help="Record the token ids into this JSON file.")
    what.add_argument("--reports", type=Path, help="Compare the texts of the reports in this folder with evals/reports/.")
    what.add_argument("--check", type=Path, help="Compare with the token ids recorded in this JSON file.")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()
    if args.reports:
        sys.exit(0 if same_report_texts(args.reports) else 1)
    found = record(HybridPipeline.from_pretrained(), args.max_new_tokens)
    if args.write:
        args.write.write_text(json.dumps(found, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {args.write}: {len(found)} settings")
        return
    expected = json.loads(args.check.read_text())
    differ = [name for name in expected if {k: found.get(name, {}).get(k) for k in ("draft_token_ids", "token_ids")}
              != {k: expected[name][k] for k in ("draft_token_ids", "token_ids")}]
    for name in expected:
        print(f"{name}: {'DIFFERS' if name in differ else 'same'} token ids ({len(expected[name]['token_ids'])} tokens)")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
