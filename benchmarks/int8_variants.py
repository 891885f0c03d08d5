"""Which int8 layout is fastest and accurate on this host's instruction set: edgec int8 built each way, in one run.

    python benchmarks/int8_variants.py --models mpnet,minilm

Variants (static int8, the ort-x86 profile otherwise): u8 activations x s8 weights (VPMADDUBSW on AVX2, where two
adjacent products are summed in 16 bits and can saturate; VNNI elsewhere), the same with 7-bit weights
(reduce_range: no saturation), u8 x u8 (Optimum's AVX2 preset; a slower kernel without that saturation), and the
same u8 x s8 with outlier input channels computed in float (ops.outliers). STS-B test Spearman and cosine to fp32 PyTorch; latency at batch
1, 2 threads, in interleaved rounds, each measurement in a fresh process. Artifacts are kept in
benchmarks/work/run/<model>/variant-*.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import models  # noqa: E402
from run import STS, WORK, _cached, edgec_row, machine, per_row, time_rows, write_section  # noqa: E402

from edgec.data import read_sts_benchmark  # noqa: E402
from edgec.hardware import host  # noqa: E402
from edgec.parity.evalset import reference_outputs  # noqa: E402
from edgec.source import load_source  # noqa: E402
from edgec.targets import load_target  # noqa: E402

VARIANTS = {
    "u8s8": {},
    "u8s8, 7-bit weights": {"reduce_range": True},
    "u8u8": {"weight_type": "uint8"},
    "u8s8, outlier channels in float": {"split_outliers": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mpnet,minilm")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--lengths", default="32,128")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    command = ("python benchmarks/int8_variants.py " + " ".join(sys.argv[1:])).strip()
    lengths = [int(n) for n in args.lengths.split(",")]
    base = load_target("ort-x86")
    results, lines = [], []
    for name in args.models.split(","):
        model_dir = getattr(models, name)()
        source = load_source(model_dir)
        test = read_sts_benchmark(STS / "sts-test.csv")
        calib = read_sts_benchmark(STS / "sts-train.csv").single_texts()
        evaluation = reference_outputs(source, test, 512)
        rows = {}
        for label in args.variants.split(","):
            # instruction_sets={}: the variant's own settings, not the profile's changes for this host
            profile = dataclasses.replace(
                base, quantization=dataclasses.replace(base.quantization, **VARIANTS[label]), instruction_sets={}
            )
            folder = WORK / name / ("variant-" + label.replace(", ", "-").replace(" ", "_"))
            rows[label] = _cached(
                folder,
                args.rebuild,
                lambda f, p=profile: edgec_row(model_dir, f, p, "int8", calib, test, evaluation),  # noqa: B023
            )
        started = time.perf_counter()
        rounds, _ = time_rows(rows, model_dir, len(source.tokenizer), lengths, args.rounds, args.runs)
        latencies = per_row(rounds, statistics.median)
        for label, row in rows.items():
            result = {
                "model": name,
                "variant": label,
                **{k: v for k, v in row.items() if k != "path"},
                "latency_ms": {str(n): latencies[label][n] for n in lengths},
            }
            results.append(result)
            lines.append(
                f"| {name} | {label} | {row['spearman']:.2f} | {row['cosine_mean']:.4f} / {row['cosine_min']:.4f} | "
                + " | ".join(f"{latencies[label][n]:.2f}" for n in lengths)
                + " |"
            )
        print(f"{name}: timed in {time.perf_counter() - started:.0f} s", flush=True)
    table = (
        "\n".join(
            [
                f"## int8 layouts on this host ({host().instruction_set}): accuracy and latency",
                "",
                f"Machine: {machine()}. Command: `{command}`. STS-B test (1,379 pairs); calibration 256 STS-B train sentences; "
                f"latency batch 1, 2 intra-op threads, median of {args.rounds} interleaved rounds' p50s, each in a fresh process.",
                "",
                "| model | int8 layout | STS-B Spearman | cosine to fp32 (mean / worst) | "
                + " | ".join(f"{n} tok ms" for n in lengths)
                + " |",
                "|---|---|---|---|" + "---|" * len(lengths),
                *lines,
            ]
        )
        + "\n"
    )
    write_section(args.output, f"int8-variants-{host().instruction_set}", table, script="benchmarks/int8_variants.py")
    (HERE / f"results-int8-variants-{host().instruction_set}.json").write_text(json.dumps(results, indent=1))
    print(table, flush=True)


if __name__ == "__main__":
    main()
