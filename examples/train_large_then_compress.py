"""Train large, then compress: does a large model fine-tuned and compressed beat a small one, at equal latency?

Both models are fine-tuned on the same labelled data for the same wall-clock budget (`edgec finetune`),
then each is compiled across the same prune x precision grid (`edgec sweep`) and every artifact's dev
accuracy and latency on this machine go on one chart. The verdict compares, at the latency of the small
family's most accurate artifact, the most accurate large-family artifact that is at least as fast.

    python examples/train_large_then_compress.py --small MINILM_DIR --large MPNET_DIR \\
        --train ../shared/data/sst2/train.tsv --dev ../shared/data/sst2/dev.tsv --minutes 20 --out proof/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import edgec
from edgec.bench import BenchConfig
from edgec.data import Columns
from edgec.finetune import finetune
from edgec.recipe import TrainConfig
from edgec.sweep import sweep


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", required=True, help="Small pretrained model folder (e.g. all-MiniLM-L6-v2).")
    parser.add_argument("--large", required=True, help="Large pretrained model folder (e.g. all-mpnet-base-v2).")
    parser.add_argument("--train", type=Path, required=True, help="Labelled training data (SST-2 train.tsv).")
    parser.add_argument("--dev", type=Path, required=True, help="Labelled dev data (SST-2 dev.tsv).")
    parser.add_argument("--text-column", default="sentence")
    parser.add_argument("--minutes", type=float, default=20.0, help="Fine-tuning budget, the same for both models.")
    parser.add_argument("--steps", type=int, default=100_000, help="Step budget (the minutes usually end training first).")
    parser.add_argument("--eval-every", type=int, default=150)
    parser.add_argument("--prune", default="0,0.3,0.5,0.7")
    parser.add_argument("--precision", default="fp32,int8")
    parser.add_argument("--runs", type=int, default=100, help="Timed runs per artifact (batch 1, --seq-len tokens).")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args()


def family(name: str, model: str, args: argparse.Namespace, train, dev) -> dict:
    """Fine-tune one model under the budget, then sweep it; the sweep's rows tagged with the family."""
    config = TrainConfig(steps=args.steps, minutes=args.minutes, learning_rate=1e-4 if name == "small" else 5e-5,
                         eval_every=args.eval_every, patience=100, max_length=64)
    tuned = args.out / f"{name}-finetuned"
    record = finetune(model, task="sequence-classification", train_data=train, eval_data=dev, config=config, out=tuned, force=True)
    rows = sweep(tuned, "ort", fractions=[float(f) for f in args.prune.split(",")], precisions=args.precision.split(","),
                 calib=train.sample(256, 0), eval=dev, out=args.out / f"{name}-sweep",
                 bench=BenchConfig(batch=1, seq_len=args.seq_len, threads=2, warmup=10, runs=args.runs), force=True)
    return {"finetune": record, "artifacts": [{**r, "family": name} for r in rows]}


def verdict(small: list[dict], large: list[dict]) -> dict:
    """At the latency of the small family's most accurate artifact: the large family's best artifact as fast or faster."""
    best_small = max(small, key=lambda r: r["value"])
    fast_large = [r for r in large if r["latency_ms"] <= best_small["latency_ms"]]
    best_large = max(fast_large, key=lambda r: r["value"]) if fast_large else None
    return {
        "small_best": best_small["name"], "small_accuracy": best_small["value"], "latency_ms": best_small["latency_ms"],
        "large_best_as_fast": best_large["name"] if best_large else None,
        "large_accuracy": best_large["value"] if best_large else None,
        "large_minus_small": best_large["value"] - best_small["value"] if best_large else None,
    }


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for name, color in (("small", "tab:blue"), ("large", "tab:red")):
        mine = [r for r in rows if r["family"] == name]
        ax.scatter([r["latency_ms"] for r in mine], [r["value"] for r in mine], s=[30 + 8 * r["size_mb"] for r in mine],
                   color=color, alpha=0.6, edgecolors="black", label=f"{name} model, fine-tuned then compressed")
        for r in mine:
            ax.annotate(r["name"], (r["latency_ms"], r["value"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set_xlabel("latency ms (p50, batch 1, this machine)")
    ax.set_ylabel("dev accuracy %")
    ax.set_title("Train large, then compress (bubble area ~ file size)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def main() -> None:
    args = arguments()
    args.out.mkdir(parents=True, exist_ok=True)
    columns = Columns(text=args.text_column, label="label")
    train, dev = edgec.read_dataset(args.train, columns), edgec.read_dataset(args.dev, columns)
    small = family("small", args.small, args, train, dev)
    large = family("large", args.large, args, train, dev)
    rows = small["artifacts"] + large["artifacts"]
    result = {"budget_minutes": args.minutes, "small": small, "large": large, "verdict": verdict(small["artifacts"], large["artifacts"])}
    (args.out / "proof.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    plot(rows, args.out / "proof.png")
    v = result["verdict"]
    print(f"fine-tuned {args.minutes:g} min each: small best dev {small['finetune']['best_score']:.2f}, large best dev {large['finetune']['best_score']:.2f}")
    if v["large_best_as_fast"] is None:
        print(f"no large-family artifact is as fast as {v['small_best']} ({v['latency_ms']:.2f} ms): the claim is not shown at this latency")
    else:
        print(f"at {v['latency_ms']:.2f} ms: small {v['small_best']} {v['small_accuracy']:.2f} vs large {v['large_best_as_fast']} "
              f"{v['large_accuracy']:.2f} ({v['large_minus_small']:+.2f} points)")
    print(f"chart: {args.out / 'proof.png'}; numbers: {args.out / 'proof.json'}")


if __name__ == "__main__":
    main()
