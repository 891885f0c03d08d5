"""ExecuTorch .pte of MiniLM next to the mobile .ort bundle: size, STS-B test Spearman measured by each artifact's own
runtime, and x86 latency through each runtime.

First chooses the int8 .pte's layout (how the FFN output projections are quantized: edgec's FFN_OUTPUT_LAYOUTS) by
Spearman on STS-B *dev*, measured by the .pte itself; nothing is chosen on the test pairs. Then builds
`--target executorch` (int8 in the chosen layout: PT2E + XNNPACK; and fp32) and `--target mobile` (int8 .ort),
calibrating on STS-B *train* sentences and verifying on STS-B test (the build's own ledger: the .pte runs in ExecuTorch's
Python runtime, the .ort in ONNX Runtime). Latency: batch 1, sequence 128, 2 threads (ExecuTorch's thread pool /
ORT's intra-op threads), interleaved rounds, each round of each runtime in a fresh process; the median of per-round
p50s. Writes results-executorch-minilm.json and its RESULTS.md section.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import models  # noqa: E402
from run import STS, machine, write_section  # noqa: E402

import edgec  # noqa: E402
from edgec.artifacts.artifact import package_versions  # noqa: E402
from edgec.backends import executorch as executorch_backend  # noqa: E402
from edgec.data import read_sts_benchmark  # noqa: E402
from edgec.recipe import QuantConfig, Recipe  # noqa: E402
from edgec.running.bench import BenchConfig, bench_model  # noqa: E402
from edgec.sweep import MEASURE_ONLY  # noqa: E402

THREADS = 2


def build(
    model_dir: Path, target: str, precision: str, out: Path, split: str = "test", **recipe
) -> tuple[edgec.Artifact, float]:
    evaluation = read_sts_benchmark(STS / f"sts-{split}.csv")
    calib = read_sts_benchmark(STS / "sts-train.csv").single_texts()
    started = time.perf_counter()
    artifact = edgec.build(
        model_dir,
        target,
        recipe=Recipe(quant=QuantConfig(precision=precision), **recipe),
        calib=calib,
        eval=evaluation,
        out=out,
        force=True,
    )
    return artifact, time.perf_counter() - started


def choose_layout(model_dir: Path, work: Path) -> tuple[str, list[dict]]:
    """The int8 .pte layout with the best STS-B dev Spearman (measured by ExecuTorch's runtime), and every layout's row."""
    rows = []
    for layout in executorch_backend.FFN_OUTPUT_LAYOUTS:
        with mock.patch.object(executorch_backend, "FFN_OUTPUT", layout):
            artifact, seconds = build(
                model_dir, "executorch", "int8", work / f"select-{layout}", split="dev", parity=MEASURE_ONLY
            )
        parity = artifact.manifest.parity
        final = parity.ledger[-1].metrics
        rows.append(
            {
                "ffn_output": layout,
                "dev_spearman": final["spearman"],
                "dev_drop": parity.reference_metric["spearman"] - final["spearman"],
                "dev_cosine": final["cosine_mean"],
                "dev_pairs": parity.eval_examples,
                "build_s": seconds,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return max(rows, key=lambda row: row["dev_spearman"])["ffn_output"], rows


def measure(name: str, rounds: int, runs: int, work: Path) -> dict:
    model_dir = getattr(models, name)()
    layout, selection = choose_layout(model_dir, work)
    with mock.patch.object(executorch_backend, "FFN_OUTPUT", layout):
        chosen_int8 = build(model_dir, "executorch", "int8", work / "pte-int8")
    built = {
        "executorch int8": chosen_int8,
        "executorch fp32": build(model_dir, "executorch", "fp32", work / "pte-fp32"),
        "mobile int8 (.ort)": build(model_dir, "mobile", "int8", work / "mobile.zip"),
    }
    config = BenchConfig(batch=1, seq_len=128, threads=THREADS, warmup=10, runs=runs)
    vocab = len(built["executorch int8"][0].tokenizer())
    p50s: dict[str, list[float]] = {key: [] for key in built}
    for _ in range(rounds):  # interleaved: slow drifts of a shared machine hit every row alike
        for key, (artifact, _) in built.items():
            p50s[key].append(bench_model(str(artifact.model_path), vocab, config, artifact.session).p50_ms)
    rows = []
    for key, (artifact, seconds) in built.items():
        parity = artifact.manifest.parity
        final = parity.ledger[-1]
        reference = parity.reference_metric["spearman"]  # on this build's own gate pairs
        rows.append(
            {
                "artifact": key,
                "file": artifact.manifest.model_file,
                "measured_by": "ExecuTorch runtime (XNNPACK)" if key.startswith("executorch") else "ONNX Runtime CPU",
                "reference_spearman": reference,
                "spearman": final.metrics["spearman"],
                "drop": reference - final.metrics["spearman"],
                "cosine": final.metrics["cosine_mean"],
                "model_mb": artifact.manifest.sizes.model_bytes / 1e6,
                "latency_ms": statistics.median(p50s[key]),
                "round_p50s": p50s[key],
                "build_s": seconds,
                "passed": parity.passed,
                "delegated_partitions": artifact.manifest.stages.emit.delegated_partitions,
                "eval_pairs": parity.eval_examples,
                "selection_pairs": parity.selection_examples,
            }
        )
    layouts = {"chosen": layout, "code_default": executorch_backend.FFN_OUTPUT, "selection": selection}
    return {
        "model": name,
        "rows": rows,
        "layout": layouts,
        "rounds": rounds,
        "runs": runs,
        "threads": THREADS,
        "machine": machine(),
        "versions": {**package_versions(), "executorch": _version("executorch"), "torchao": _version("torchao")},
    }


def _version(name: str) -> str:
    from importlib import metadata

    return metadata.version(name)


def markdown(r: dict, command: str) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in r["versions"].items())
    ort = next(row for row in r["rows"] if row["file"] == "model.ort")
    lines = [
        f"## {r['model']}: ExecuTorch .pte (XNNPACK) beside the mobile .ort bundle (STS-B test)",
        "",
        f"Machine: {r['machine']}. Versions: {versions}.",
        (
            f"Command: `{command}`. Calibration: 256 STS-B *train* sentences; Spearman on the STS-B test pairs each build's gate holds "
            f"(the pairs column: a build whose int8 fallback may choose takes its choice on the other pairs of the 1,379), measured by "
            f"each artifact's own runtime in the build's ledger; the drop is from PyTorch fp32 on the same pairs. "
            f"Latency: batch 1, sequence 128, {r['threads']} threads, median of {r['rounds']} interleaved rounds' p50 ({r['runs']} runs each, "
            "each round in a fresh process)."
        ),
        "",
        (
            f"int8 .pte layout chosen on STS-B dev ({r['layout']['selection'][0]['dev_pairs']} pairs, Spearman measured by the .pte; reference on them "
            f"{r['layout']['selection'][0]['dev_spearman'] + r['layout']['selection'][0]['dev_drop']:.2f}): FFN output projections "
            f"**{r['layout']['chosen']}** (edgec's default: {r['layout']['code_default']})."
        ),
        "",
        "| FFN output projections | dev Spearman | dev drop | dev cosine to fp32 |",
        "|---|---|---|---|",
        *(
            f"| {row['ffn_output']} | {row['dev_spearman']:.2f} | {row['dev_drop']:.2f} | {row['dev_cosine']:.4f} |"
            for row in r["layout"]["selection"]
        ),
        "",
        "| artifact | file | measured by | pairs | Spearman | drop | cosine to fp32 | model MB | latency ms | vs .ort | build s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        lines.append(
            f"| {row['artifact']} | `{row['file']}` | {row['measured_by']} | {row['eval_pairs']} | {row['spearman']:.2f} | {row['drop']:.2f} | {row['cosine']:.4f} | "
            f"{row['model_mb']:.1f} | {row['latency_ms']:.2f} | {row['latency_ms'] / ort['latency_ms']:.2f} | {row['build_s']:.0f} |"
        )
    return "\n".join(lines) + "\n\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    command = ("python benchmarks/executorch_minilm.py " + " ".join(sys.argv[1:])).strip()
    with tempfile.TemporaryDirectory(prefix="edgec-executorch-") as tmp:
        result = measure(args.model, args.rounds, args.runs, Path(tmp))
    (HERE / f"results-executorch-{args.model}.json").write_text(json.dumps(result, indent=1))
    table = markdown(result, command)
    write_section(HERE / "RESULTS.md", f"executorch-{args.model}", table, "benchmarks/executorch_minilm.py")
    print(table)


if __name__ == "__main__":
    main()
