"""The block drafter's tokens per verify pass against the tokens it trained on, and how far its training accuracy sits
above its validation acceptance (what more data could still buy), from the runs' own records.

    .venv/bin/python evals/block_drafter_data_curve.py evals/block_drafter/block-drafter-4l-half evals/block_drafter/block-drafter-4l ... \
        [--output evals/block_drafter/data-curve]

Reads each folder's summary.json (the recipe, its tokens, the validation learning curve) and train_log.jsonl (per-slot
accuracy on the training batches, averaged over the last `--tail` steps). Writes OUTPUT.md (a table) and OUTPUT.png
(tokens per pass over training tokens, one line per design). Torch is not needed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def design(recipe: dict) -> str:
    t0 = f"t0 through the first {recipe['t0_layers']} layers" if recipe.get("t0_layers") else "t0 embedded"
    reads = recipe.get("reads") or "entering"
    extra = (", slot embeddings" if recipe.get("slot_embeddings") else "") + (f", LoRA rank {recipe['lora_rank']}" if recipe.get("lora_rank") else "")
    return f"{recipe['layers']} copied layers, reads {reads}, {t0}{extra}"


def run_row(folder: Path, tail: int) -> dict:
    summary = json.loads((folder / "summary.json").read_text())
    records = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines() if line.strip()]
    last = [r["accuracy"] for r in records[-tail:]]
    trained = [sum(a[j] for a in last) / len(last) for j in range(2)]
    final = summary["learning_curve"][-1]
    return {"run": folder.name, "design": design(summary["recipe"]), "steps": summary["recipe"]["steps"],
            "distilled": summary["distilled_tokens"], "text": summary.get("text_tokens") or 0,
            "tokens_per_pass": final["tokens_per_pass"], "kept": final["kept_per_slot"][:2], "trained": trained}


def write_table(rows: list[dict], path: Path, command: str, tail: int) -> None:
    lines = [f"Command: `{command}`", "",
             "Validation: 8 prompts no training or report reads, 64 tokens each, every slot proposed, after the last step. "
             f"Training accuracy: the share of block slots right on the training batches, the last {tail} steps.", "",
             "| run | design | distilled / plain-text tokens | steps | tokens per pass | kept slot 0 / 1 (validation) | right slot 0 / 1 (training) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['design']} | {r['distilled']:,} / {r['text']:,} | {r['steps']} | {r['tokens_per_pass']:.3f} | "
                     f"{r['kept'][0]:.2f} / {r['kept'][1]:.2f} | {r['trained'][0]:.2f} / {r['trained'][1]:.2f} |")
    path.write_text("\n".join(lines) + "\n")


def write_plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name in dict.fromkeys(r["design"] for r in rows):
        mine = sorted((r for r in rows if r["design"] == name), key=lambda r: r["distilled"] + r["text"])
        ax.plot([r["distilled"] + r["text"] for r in mine], [r["tokens_per_pass"] for r in mine], marker="o", label=name)
        for r in mine:
            if r["text"]:
                ax.annotate(f"{r['text']:,} of them plain text", (r["distilled"] + r["text"], r["tokens_per_pass"]), fontsize=7,
                            textcoords="offset points", xytext=(-120, -14))
    ax.set_xscale("log")
    ax.set_xlabel("training tokens (self-distilled, plus plain text)")
    ax.set_ylabel("tokens per verify pass (validation)")
    ax.set_title("Block drafter: tokens per pass against the tokens it trained on")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    import sys

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="block drafter folders or their committed cards (summary.json, train_log.jsonl)")
    parser.add_argument("--output", default="evals/block_drafter/data-curve")
    parser.add_argument("--tail", type=int, default=200, help="training steps the training accuracy averages")
    args = parser.parse_args()
    rows = [run_row(Path(f), args.tail) for f in args.folders]
    output = Path(args.output)
    write_table(rows, output.with_suffix(".md"), "python " + " ".join(sys.argv), args.tail)
    write_plot(rows, output.with_suffix(".png"))
    print(output.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
