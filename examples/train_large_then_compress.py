"""Train large, then compress: for the same training time and at the same latency, does a large model beat a small one?

Each family gets the same wall-clock budget T (Li et al., ICML 2020, "Train Large, Then Compress"):
- small: `edgec finetune` for T;
- large: `edgec finetune` for a share of T, then pruned to the small model's cost (by default to its width and
  depth too) and distilled from its fine-tuned
  self (labels mixed in) until T is spent, pruning included.
Both families' int8 builds (not counted in T) are timed in the same run, rounds interleaved, fastest round
reported. Checkpoints, early stops
and int8 fallbacks select on a validation split held out of train; the accuracy reported is on dev, which nothing
selected on. The verdict is computed: at the small model's int8 latency, the most accurate large-family artifact at
least as fast, against the small model's int8 accuracy.

    python examples/train_large_then_compress.py --small MINILM --large MPNET --train train.jsonl \\
        --validation validation.jsonl --dev dev.tsv --dev-text-column sentence --budget-minutes 40 --out proof/ \\
        [--family small|large] [--time]

`--family` runs one family (a long run can be split); `--time` times every family's artifacts found in --out and
writes proof.json, proof.md and proof.png. Without either, both families run and are timed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import edgec
from edgec.api import compress
from edgec.artifacts.artifact import package_versions
from edgec.compression.finetune import finetune
from edgec.compression.surgery import encoder_layers, ffn_widths, head_counts, head_dim, hidden_size
from edgec.data import Columns, Dataset
from edgec.errors import InputError
from edgec.hardware import host
from edgec.ops.macs import encoder_macs, unit_costs
from edgec.parity.evalset import reference_outputs
from edgec.parity.runtime import measure_model
from edgec.recipe import DistillConfig, PruneConfig, QuantConfig, Recipe, TrainConfig
from edgec.running.bench import BenchConfig, bench_onnx
from edgec.source import load_source
from edgec.sweep import MEASURE_ONLY
from edgec.targets import SessionSettings, load_target

FAMILIES = ("small", "large")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", required=True, help="Small pretrained model folder (e.g. all-MiniLM-L6-v2).")
    parser.add_argument("--large", required=True, help="Large pretrained model folder (e.g. all-mpnet-base-v2).")
    parser.add_argument("--train", type=Path, required=True, help="Labelled training data.")
    parser.add_argument("--validation", type=Path, required=True, help="Labelled data every selection is made on.")
    parser.add_argument("--dev", type=Path, required=True, help="Labelled data the reported accuracy comes from.")
    parser.add_argument("--text-column", default="text")
    parser.add_argument(
        "--dev-text-column", default=None, help="Text column of --dev, if it differs (SST-2's dev.tsv: sentence)."
    )
    parser.add_argument("--budget-minutes", type=float, default=40.0, help="Wall clock per family, T.")
    parser.add_argument("--finetune-share", type=float, default=0.3, help="Share of T the large model fine-tunes.")
    parser.add_argument(
        "--prune",
        type=float,
        default=None,
        help="Share of the large model's encoder MACs to remove (default: down to the small model's).",
    )
    # The default shape is the small model's width and depth: at its MACs, mpnet pruned to MiniLM's 384 x 6 layers
    # scored 2.3 validation points more than 12 narrow layers (hidden 256) and ran in 0.72x their time
    # (benchmarks/prune_shapes.py, RESULTS.md).
    parser.add_argument("--prune-units", default="heads,ffn,layers,hidden")
    parser.add_argument(
        "--hidden-size", type=int, default=None, help="Width the large one keeps (default: the small model's)."
    )
    parser.add_argument(
        "--max-layers",
        type=int,
        default=None,
        help="With layers in --prune-units: the most layers the large one keeps (default: the small model's).",
    )
    parser.add_argument("--schedule", default="one-shot", choices=("one-shot", "iterative"))
    parser.add_argument("--steps", type=int, default=1_000_000, help="Step budget (the clock ends training first).")
    parser.add_argument("--eval-every", type=int, default=150)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--runs", type=int, default=100, help="Timed runs per artifact and round.")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--family", choices=FAMILIES, default=None)
    parser.add_argument("--time", action="store_true", help="Only time the artifacts in --out and write the verdict.")
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args()


def read(path: Path, text_column: str) -> Dataset:
    return edgec.read_dataset(path, Columns(text=text_column, label="label"))


def encoder_cost(model_dir: Path | str, lengths: list[int]) -> float:
    """Encoder MACs per text at the given token counts."""
    model = load_source(model_dir).model
    return encoder_macs(head_counts(model), ffn_widths(model), unit_costs(lengths, hidden_size(model), head_dim(model)))


def token_lengths(model_dir: Path | str, data: Dataset, max_length: int) -> list[int]:
    tokenizer = load_source(model_dir).tokenizer
    return [len(ids) for ids in tokenizer(data.texts, truncation=True, max_length=max_length)["input_ids"]]


def large_shape(
    small_dir: Path | str, units: tuple[str, ...], hidden: int | None, layers: int | None
) -> tuple[int | None, int | None]:
    """The width and the most layers the large model keeps: those given, else the small model's where the units let
    them go (hidden, layers), else None (the search decides)."""
    small = load_source(small_dir).model
    width = hidden or (hidden_size(small) if "hidden" in units else None)
    depth = layers or (len(encoder_layers(small)) if "layers" in units else None)
    return width, depth


def run_small(args: argparse.Namespace, train: Dataset, validation: Dataset) -> dict:
    """Fine-tune the small model for the whole budget."""
    config = TrainConfig(
        steps=args.steps,
        minutes=args.budget_minutes,
        learning_rate=1e-4,
        eval_every=args.eval_every,
        patience=1000,
        max_length=args.max_length,
    )
    folder = args.out / "small" / "finetuned"
    record = finetune(
        args.small,
        task="sequence-classification",
        train_data=train,
        eval_data=validation,
        config=config,
        out=folder,
        force=True,
    )
    return {"finetune": record, "models": {"finetuned": folder}}


def run_large(args: argparse.Namespace, train: Dataset, validation: Dataset) -> dict:
    """Fine-tune the large model for a share of the budget, then prune and distill until the budget is spent."""
    started = time.perf_counter()
    deadline = started + 60 * args.budget_minutes
    config = TrainConfig(
        steps=args.steps,
        minutes=args.finetune_share * args.budget_minutes,
        learning_rate=5e-5,
        eval_every=args.eval_every,
        patience=1000,
        max_length=args.max_length,
    )
    tuned = args.out / "large" / "finetuned"
    record = finetune(
        args.large,
        task="sequence-classification",
        train_data=train,
        eval_data=validation,
        config=config,
        out=tuned,
        force=True,
    )
    calib = train.sample(256, 0)
    lengths = token_lengths(args.large, calib, args.max_length)
    fraction = (
        args.prune
        if args.prune is not None
        else 1 - encoder_cost(args.small, lengths) / encoder_cost(args.large, lengths)
    )
    units = tuple(args.prune_units.split(","))
    width, depth = large_shape(args.small, units, args.hidden_size, args.max_layers)
    recipe = Recipe(
        prune=PruneConfig(
            fraction=round(fraction, 4),
            units=units,
            hidden_size=width,
            max_layers=depth,
            schedule=args.schedule,
        ),
        distill=DistillConfig(
            steps=args.steps,
            minutes=args.budget_minutes,
            max_length=args.max_length,
            eval_every=args.eval_every,
            patience=1000,
        ),
        max_length=args.max_length,
    )
    compressed = args.out / "large" / "compressed"
    summary = compress(
        tuned, recipe, calib=calib, eval=validation, train=train, out=compressed, force=True, deadline=deadline
    )
    seconds = time.perf_counter() - started
    # family.json keeps the prune note's keys, the distill note and the ledger's rows as JSON objects.
    compressed_record = {
        **summary.prune.to_json(),
        "distill": summary.distill.to_json() if summary.distill else None,
        "ledger": [dataclasses.asdict(row) for row in summary.ledger],
        "reference_metric": summary.reference_metric,
    }
    return {
        "finetune": record,
        "compress": compressed_record,
        "fraction": fraction,
        "seconds": seconds,
        "models": {"finetuned": tuned, "compressed": compressed},
    }


def int8_artifacts(
    family: dict, name: str, args: argparse.Namespace, train: Dataset, validation: Dataset, dev: Dataset
) -> list[dict]:
    """Each of a family's models as a static int8 build (fallback chosen on validation), with its dev accuracy."""
    rows = []
    for label, folder in family["models"].items():
        out = args.out / name / f"{label}-int8"
        recipe = Recipe(quant=QuantConfig(precision="int8"), parity=MEASURE_ONLY, max_length=args.max_length)
        artifact = edgec.build(
            folder, "ort", recipe=recipe, calib=train.sample(256, 0), eval=validation, out=out, force=True
        )
        source = load_source(folder)
        reference = reference_outputs(source, dev, args.max_length)
        row = measure_model(
            artifact.model_path, "dev", source.task, reference, MEASURE_ONLY, load_target("ort").session
        )
        rows.append(
            {
                "family": name,
                "name": f"{name} {label} int8",
                "path": str(artifact.model_path),
                "vocab": len(source.tokenizer),
                "fp32_dev": reference.reference_metric["accuracy"],
                "validation": artifact.manifest.parity.ledger[-1].metrics["accuracy"],
                "value": row.metrics["accuracy"],
                "size_mb": artifact.model_path.stat().st_size / 1e6,
                "session": dataclasses.asdict(artifact.session),
            }
        )  # timed with the settings the build recorded
    return rows


def run_family(name: str, args: argparse.Namespace) -> None:
    train, validation = read(args.train, args.text_column), read(args.validation, args.text_column)
    dev = read(args.dev, args.dev_text_column or args.text_column)
    started = time.perf_counter()
    family = (run_small if name == "small" else run_large)(args, train, validation)
    family["seconds"] = time.perf_counter() - started
    family["artifacts"] = int8_artifacts(family, name, args, train, validation, dev)
    family["models"] = {k: str(v) for k, v in family["models"].items()}
    (args.out / name / "family.json").write_text(json.dumps(family, indent=2, default=str) + "\n")


def time_artifacts(rows: list[dict], seq_len: int, runs: int, rounds: int) -> None:
    """Latency of every artifact (a row's path, vocab and session): each round's p50, rounds interleaved, and the
    fastest round reported. This VM has run the same file at two speeds in consecutive processes
    (benchmarks/RESULTS.md, issue 13): the fastest round is the machine undisturbed, the same statistic for every
    artifact; the rounds and what else ran are kept."""
    config = BenchConfig(batch=1, seq_len=seq_len, threads=2, warmup=20, runs=runs)
    for row in rows:
        row["latency_rounds"], row["other_load"] = [], []
    for _ in range(rounds):
        for row in rows:
            result = bench_onnx(row["path"], row["vocab"], config, SessionSettings(**row["session"]))
            row["latency_rounds"].append(result.p50_ms)
            row["other_load"].append(result.other_load)
    for row in rows:
        row["latency_ms"] = min(row["latency_rounds"])


def verdict(small: list[dict], large: list[dict], margin: float = 0.5) -> dict:
    """At the latency of the small family's most accurate artifact, the large family's most accurate artifact that
    is at least as fast, both chosen on validation and compared on dev ("value"), which nothing selected on.
    outcome: "shown" (more accurate), "not shown", or "no artifact fast enough"; target_met: at least `margin`
    points more accurate."""
    best_small = max(small, key=lambda r: r["validation"])
    fast = [r for r in large if r["latency_ms"] <= best_small["latency_ms"]]
    result = {
        "small": best_small["name"],
        "small_accuracy": best_small["value"],
        "latency_ms": best_small["latency_ms"],
        "large": None,
        "large_accuracy": None,
        "large_latency_ms": None,
        "difference": None,
        "margin": margin,
        "outcome": "no artifact fast enough",
        "target_met": False,
        "fastest_large": min(large, key=lambda r: r["latency_ms"])["name"] if large else None,
    }
    if not fast:
        return result
    best = max(fast, key=lambda r: r["validation"])
    difference = best["value"] - best_small["value"]
    return {
        **result,
        "large": best["name"],
        "large_accuracy": best["value"],
        "large_latency_ms": best["latency_ms"],
        "difference": difference,
        "outcome": "shown" if difference > 0 else "not shown",
        "target_met": difference >= margin,
    }


def sentence(v: dict) -> str:
    if v["outcome"] == "no artifact fast enough":
        return (
            f"no large-family artifact is as fast as {v['small']} ({v['latency_ms']:.2f} ms): the claim is not "
            f"shown at this latency"
        )
    return (
        f"at {v['latency_ms']:.2f} ms: {v['small']} {v['small_accuracy']:.2f} vs {v['large']} "
        f"{v['large_accuracy']:.2f} ({v['difference']:+.2f} points, {v['large_latency_ms']:.2f} ms): claim "
        f"{v['outcome']}, target (+{v['margin']:g}) {'met' if v['target_met'] else 'missed'}"
    )


def table(rows: list[dict]) -> str:
    lines = [
        "| family | artifact | fp32 dev % | int8 validation % | int8 dev % | latency ms | size MB |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['family']} | {r['name']} | {r['fp32_dev']:.2f} | {r['validation']:.2f} | {r['value']:.2f} | "
        f"{r['latency_ms']:.2f} | {r['size_mb']:.1f} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], v: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for name, color in (("small", "tab:blue"), ("large", "tab:red")):
        mine = [r for r in rows if r["family"] == name]
        ax.scatter(
            [r["latency_ms"] for r in mine],
            [r["value"] for r in mine],
            color=color,
            edgecolors="black",
            label=f"{name} family",
            zorder=3,
        )
        for r in mine:
            ax.annotate(r["name"], (r["latency_ms"], r["value"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.axvline(v["latency_ms"], color="gray", linestyle="--", linewidth=1, label="small model's int8 latency")
    ax.set_xlabel("latency ms (p50, batch 1, this machine)")
    ax.set_ylabel("dev accuracy %")
    ax.set_title(f"Train large, then compress: {v['outcome']}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def finished_families(out: Path) -> dict[str, dict]:
    """Each family's record in `out`; InputError naming the first family that has not run there."""
    for name in FAMILIES:
        if not (out / name / "family.json").is_file():
            raise InputError(
                f"{out} holds no finished {name} family ({name}/family.json): run it with --family {name} first"
            )
    return {name: json.loads((out / name / "family.json").read_text()) for name in FAMILIES}


def report(args: argparse.Namespace) -> dict:
    families = finished_families(args.out)
    rows = [row for name in FAMILIES for row in families[name]["artifacts"]]
    time_artifacts(rows, args.seq_len, args.runs, args.rounds)
    v = verdict([r for r in rows if r["family"] == "small"], [r for r in rows if r["family"] == "large"])
    result = {
        "machine": host().to_dict(),
        "versions": package_versions(),
        "command": "python examples/train_large_then_compress.py " + " ".join(sys.argv[1:]),
        "budget_minutes": args.budget_minutes,
        "families": families,
        "artifacts": rows,
        "verdict": v,
        "timing": dataclasses.asdict(BenchConfig(batch=1, seq_len=args.seq_len, threads=2, warmup=20, runs=args.runs))
        | {"rounds": args.rounds, "statistic": "fastest round"},
    }
    (args.out / "proof.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (args.out / "proof.md").write_text(table(rows) + "\n" + sentence(v) + "\n")
    plot(rows, v, args.out / "proof.png")
    return result


def main() -> None:
    args = arguments()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.time:
        for name in [args.family] if args.family else FAMILIES:
            run_family(name, args)
    if args.time or args.family is None:
        try:
            result = report(args)
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        print(table(result["artifacts"]))
        print(sentence(result["verdict"]))
        print(f"chart: {args.out / 'proof.png'}; numbers: {args.out / 'proof.json'}")


if __name__ == "__main__":
    main()
