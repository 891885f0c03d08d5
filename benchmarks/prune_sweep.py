"""Pruning sweep: prune fraction x {with, without distillation} x precision, on STS-B test, in one run.

    python benchmarks/prune_sweep.py                                   # both models
    python benchmarks/prune_sweep.py --models minilm --fractions 0,0.5 --distill-minutes 1

Pruning calibrates on 256 STS-B *train* sentences; distillation trains on STS-B train and SST-2 train
sentences and early-stops on 200 STS-B *dev* pairs; every figure is on STS-B *test*, never seen before.
Each pruned model is saved as a Hugging Face folder and compiled by `edgec.build` like any model.
Writes a table and a Pareto plot (Spearman vs latency) into RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import models  # noqa: E402
from run import STS, machine, write_section  # noqa: E402

import edgec  # noqa: E402
from edgec.artifacts.artifact import package_versions  # noqa: E402
from edgec.data import Columns, Dataset, Example, read_dataset, read_sts_benchmark  # noqa: E402
from edgec.parity.evalset import reference_outputs  # noqa: E402
from edgec.parity.ledger import parity_score  # noqa: E402
from edgec.parity.runtime import measure_model, measure_module  # noqa: E402
from edgec.recipe import DistillConfig, PruneConfig  # noqa: E402
from edgec.running.bench import BenchConfig, bench_onnx  # noqa: E402
from edgec.source import (  # noqa: E402
    load_source,
    save_pruned,
)
from edgec.stages.distill import distill_student  # noqa: E402
from edgec.stages.prune import prune_source  # noqa: E402
from edgec.sweep import MEASURE_ONLY  # noqa: E402
from edgec.targets import SessionSettings  # noqa: E402

SST2 = STS.parent / "sst2"
# The sweep measures; it does not gate. (Per-stage parity is still in each artifact's ledger.)


def variants(name: str, model_dir: Path, work: Path, fractions: list[float], minutes: float) -> list[dict]:
    """Pruned (and pruned + distilled) HF folders for every fraction; fraction 0 is the model itself."""
    source = load_source(model_dir)
    calib = read_sts_benchmark(STS / "sts-train.csv").single_texts().sample(256, 0)
    dev = reference_outputs(source, read_sts_benchmark(STS / "sts-dev.csv").sample(200, 0), 128)
    train = (
        read_sts_benchmark(STS / "sts-train.csv").single_texts().texts
        + read_dataset(SST2 / "train.tsv", Columns(text="sentence")).sample(20000, 0).texts
    )
    found = [{"model": name, "prune": 0.0, "distill": "no", "folder": model_dir, "prune_s": 0.0, "distill_s": 0.0}]
    for fraction in (f for f in fractions if f > 0):
        started = time.perf_counter()
        result = prune_source(source, calib, PruneConfig(fraction=fraction), max_length=128, seed=0)
        prune_s = time.perf_counter() - started
        pruned = dataclasses.replace(source, model=result.model)
        folder = work / f"pruned-{fraction}"
        folder.mkdir(parents=True)
        save_pruned(pruned, result.summary, folder)
        common = {"model": name, "prune": fraction, "prune_s": prune_s, "summary": result.summary}
        found.append({**common, "distill": "no", "folder": folder, "distill_s": 0.0})
        if minutes <= 0:
            continue
        score = lambda m: parity_score(  # noqa: E731
            measure_module(dataclasses.replace(source, model=m), "distill", dev, MEASURE_ONLY).metrics
        )
        distilled = distill_student(
            result.model,
            source.model,
            source=source,
            data=Dataset(tuple(Example(t) for t in train), "distill texts"),
            config=DistillConfig(steps=100_000, minutes=minutes, eval_every=100, patience=4),
            evaluate=score,
            seed=0,
        )
        folder = work / f"distilled-{fraction}"
        folder.mkdir(parents=True)
        save_pruned(dataclasses.replace(source, model=distilled.model), result.summary, folder)
        found.append(
            {**common, "distill": f"{distilled.steps} steps", "folder": folder, "distill_s": distilled.seconds}
        )
        print(
            f"{name} prune {fraction}: pruned in {prune_s:.0f} s, distilled {distilled.steps} steps in {distilled.seconds:.0f} s "
            f"(dev best {distilled.best_score:.2f} at {distilled.best_step}, stopped by {distilled.stopped})",
            flush=True,
        )
    return found


def compile_and_measure(variant: dict, precision: str, work: Path, test_eval) -> dict:
    calib = read_sts_benchmark(STS / "sts-train.csv").single_texts()
    dev = read_sts_benchmark(STS / "sts-dev.csv").sample(100, 1)
    started = time.perf_counter()
    out = work / f"artifact-{variant['prune']}-{variant['distill'] != 'no'}-{precision}"
    artifact = edgec.build(
        variant["folder"],
        "ort-x86",
        recipe=edgec.Recipe(quant=edgec.QuantConfig(precision=precision), parity=MEASURE_ONLY),
        calib=calib,
        eval=dev,
        out=out,
        force=True,
    )
    build_s = time.perf_counter() - started
    row = measure_model(artifact.model_path, "test", "feature-extraction", test_eval, MEASURE_ONLY, SessionSettings())
    pruned = load_source(variant["folder"]).model
    summary = variant.get("summary")
    return {
        "model": variant["model"],
        "prune": variant["prune"],
        "distill": variant["distill"],
        "precision": precision,
        "spearman": row.metrics["spearman"],
        "cosine_mean": row.metrics["cosine_mean"],
        "model_path": str(artifact.model_path),
        "size_mb": artifact.model_path.stat().st_size / 1e6,
        "params_m": sum(p.numel() for p in pruned.parameters()) / 1e6,
        "macs_kept": summary.macs_after / summary.macs_before if summary else 1.0,
        "prune_s": variant["prune_s"],
        "distill_s": variant["distill_s"],
        "build_s": build_s,
    }


def sweep(
    name: str,
    model_dir: Path,
    work: Path,
    fractions: list[float],
    precisions: list[str],
    minutes: float,
    runs: int,
    rounds: int,
) -> list[dict]:
    source = load_source(model_dir)
    test_eval = reference_outputs(source, read_sts_benchmark(STS / "sts-test.csv"), 512)
    rows = []
    for variant in variants(name, model_dir, work, fractions, minutes):
        for precision in precisions:
            rows.append(compile_and_measure(variant, precision, work, test_eval))
            print(json.dumps(rows[-1]), flush=True)
    # Latency last, in interleaved rounds, so a slow spell of the shared machine hits every row alike.
    config, latencies = BenchConfig(batch=1, seq_len=128, threads=2, warmup=20, runs=runs), {id(r): [] for r in rows}
    for _ in range(rounds):
        for row in rows:
            latencies[id(row)].append(
                bench_onnx(row["model_path"], len(source.tokenizer), config, SessionSettings()).p50_ms
            )
    for row in rows:
        row["latency_ms"] = statistics.median(latencies[id(row)])
        del row["model_path"]
    return rows


def classifier(work: Path, fraction: float, minutes: float, runs: int) -> list[dict]:
    """CLINC150: the example's MiniLM + linear head, pruned (task-loss importance on labelled train texts) + int8."""
    import subprocess

    folder, data = work / "clinc150", work / "clinc150-data"
    subprocess.run(
        [
            sys.executable,
            str(HERE.parent / "examples" / "clinc150_classifier.py"),
            "--out",
            str(folder),
            "--data-out",
            str(data),
        ],
        check=True,
    )
    clinc = json.loads((STS.parent / "clinc150" / "data_full.json").read_text())
    labelled = Dataset(tuple(Example(text, label=intent) for text, intent in clinc["train"]), "clinc150 train")
    test = read_dataset(data / "test.jsonl")
    rows = []
    for distill in (False, True) if minutes > 0 else (False,):
        recipe = edgec.Recipe(
            prune=PruneConfig(fraction=fraction),
            quant=edgec.QuantConfig(precision="int8"),
            parity=MEASURE_ONLY,
            distill=DistillConfig(steps=100_000, minutes=minutes, eval_every=100, patience=4) if distill else None,
        )
        started = time.perf_counter()
        artifact = edgec.build(
            folder,
            "ort-x86",
            recipe=recipe,
            calib=labelled.sample(256, 0),
            eval=test,
            train=Dataset(tuple(Example(e.text) for e in labelled.examples), "clinc150 train text"),
            out=work / f"clinc-{distill}",
            force=True,
        )
        manifest = artifact.manifest
        latency = bench_onnx(
            str(artifact.model_path),
            30522,
            BenchConfig(batch=1, seq_len=128, threads=2, warmup=20, runs=runs),
            artifact.session,
        )
        for row in manifest.parity.ledger:
            rows.append(
                {
                    "prune": fraction,
                    "distill": "yes" if distill else "no",
                    "stage": row.stage,
                    "accuracy": row.metrics["accuracy"],
                    "agreement": row.metrics["agreement"],
                    "reference": manifest.parity.reference_metric["accuracy"],
                    "latency_ms": latency.p50_ms if row is manifest.parity.ledger[-1] else None,
                    "build_s": time.perf_counter() - started,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def classifier_markdown(rows: list[dict], command: str) -> str:
    lines = [
        "## CLINC150 classifier (all-MiniLM-L6-v2 + linear head, `examples/clinc150_classifier.py`), pruned + int8",
        "",
        f"Command: `{command}`. Accuracy on all 4,500 CLINC150 test texts (in-scope intents); importance from the task",
        "loss on 256 labelled *train* texts; distillation on the train texts. Each stage's row is its model's accuracy.",
        "",
        "| prune | distill | stage | accuracy % | unpruned fp32 % | drop | top-1 agreement | latency ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        latency = f"{r['latency_ms']:.2f}" if r["latency_ms"] else ""
        lines.append(
            f"| {r['prune']:g} | {r['distill']} | {r['stage']} | {r['accuracy']:.2f} | {r['reference']:.2f} | "
            f"{r['reference'] - r['accuracy']:.2f} | {r['agreement']:.4f} | {latency} |"
        )
    return "\n".join(lines) + "\n"


def pareto_plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for (model, distilled, precision), marker in zip(
        sorted({(r["model"], r["distill"] != "no", r["precision"]) for r in rows}),
        "osD^v<>ph*",
    ):
        group = sorted(
            (r for r in rows if (r["model"], r["distill"] != "no", r["precision"]) == (model, distilled, precision)),
            key=lambda r: r["latency_ms"],
        )
        label = f"{model} {precision}{' + distill' if distilled else ''}"
        ax.plot([r["latency_ms"] for r in group], [r["spearman"] for r in group], marker=marker, label=label)
        for r in group:
            ax.annotate(
                f"{r['prune']:g}",
                (r["latency_ms"], r["spearman"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    ax.set_xlabel("latency ms (batch 1, seq 128, 2 threads)")
    ax.set_ylabel("STS-B test Spearman x100")
    ax.set_title("Prune fraction (labels) vs accuracy and latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def markdown(rows: list[dict], command: str, seconds: float) -> str:
    versions = package_versions()
    lines = [
        "## Pruning sweep (STS-B test)",
        "",
        f"Machine: {machine()}. Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        f"Command: `{command}` ({seconds / 60:.0f} min). Latency: batch 1, sequence 128, 2 intra-op threads, median of "
        "per-round p50s, each in a fresh process, rounds interleaved. MACs kept: encoder multiply-accumulates at the calibration texts' lengths.",
        "",
        "| model | prune | distill | precision | STS-B Spearman | cosine to unpruned | latency ms | size MB | params M | MACs kept | prune s | distill s | build s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['prune']:g} | {r['distill']} | {r['precision']} | {r['spearman']:.2f} | {r['cosine_mean']:.4f} | "
            f"{r['latency_ms']:.2f} | {r['size_mb']:.1f} | {r['params_m']:.1f} | {r['macs_kept']:.2f} | {r['prune_s']:.0f} | "
            f"{r['distill_s']:.0f} | {r['build_s']:.0f} |"
        )
    lines += ["", "![Pareto: Spearman vs latency](prune-pareto.png)", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mpnet,minilm")
    parser.add_argument("--fractions", default="0,0.3,0.5,0.7")
    parser.add_argument(
        "--extra-fractions",
        default="mpnet=0.85",
        help="more fractions for one model, e.g. mpnet=0.85 (the latency target)",
    )
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument(
        "--distill-minutes", default="minilm=3,mpnet=5", help="per model, e.g. minilm=3,mpnet=5 (0: no distillation)"
    )
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--classifier-prune", type=float, default=0.4, help="CLINC150 classifier prune fraction (0: skip it)"
    )
    parser.add_argument("--classifier-distill-minutes", type=float, default=2.0)
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    command = ("python benchmarks/prune_sweep.py " + " ".join(sys.argv[1:])).strip()
    minutes = {k: float(v) for k, v in (item.split("=") for item in args.distill_minutes.split(","))}
    fractions = [float(f) for f in args.fractions.split(",")]
    extra = {
        k: [float(f) for f in v.split("/")]
        for k, v in (item.split("=") for item in args.extra_fractions.split(",") if item)
    }
    started, rows = time.perf_counter(), []
    with tempfile.TemporaryDirectory(prefix="edgec-sweep-") as tmp:
        for name in args.models.split(","):
            rows += sweep(
                name,
                getattr(models, name)(),
                Path(tmp) / name,
                fractions + extra.get(name, []),
                args.precisions.split(","),
                minutes.get(name, 0.0),
                args.runs,
                args.rounds,
            )
            (HERE / "results-prune-sweep.json").write_text(json.dumps(rows, indent=1))
            pareto_plot(rows, HERE / "prune-pareto.png")
            write_section(
                args.output,
                "prune-sweep",
                markdown(rows, command, time.perf_counter() - started),
                "benchmarks/prune_sweep.py",
            )
        if args.classifier_prune > 0:
            found = classifier(Path(tmp), args.classifier_prune, args.classifier_distill_minutes, args.runs)
            (HERE / "results-prune-clinc150.json").write_text(json.dumps(found, indent=1))
            write_section(
                args.output, "prune-clinc150", classifier_markdown(found, command), "benchmarks/prune_sweep.py"
            )


if __name__ == "__main__":
    main()
