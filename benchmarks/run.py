"""Side-by-side benchmark: PyTorch fp32, Optimum dynamic int8 and every edgec precision, in one run.

    python benchmarks/run.py                      # both models, writes benchmarks/RESULTS.md
    python benchmarks/run.py --models minilm --rounds 1

For each model: STS-B test Spearman (x100), mean cosine to the fp32 PyTorch embeddings, latency
(batch 1, sequence 128, 2 threads; each in a fresh process, the median of per-round p50s) and file size.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import models  # noqa: E402

import edgec  # noqa: E402
from edgec.parity.evalset import reference_outputs  # noqa: E402
from edgec.artifact import package_versions  # noqa: E402
from edgec.bench import BenchConfig, bench_onnx, bench_pytorch  # noqa: E402
from edgec.data import read_sts_benchmark  # noqa: E402
from edgec.hardware import host  # noqa: E402
from edgec.ops.pooling import append_pooling  # noqa: E402
from edgec.recipe import ParityThresholds  # noqa: E402
from edgec.source import load_source  # noqa: E402
from edgec.parity.runtime import measure_model  # noqa: E402
from edgec.targets import SessionSettings  # noqa: E402

STS = HERE.parent.parent / "shared" / "data" / "stsbenchmark"
PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8")


def optimum_dynamic_int8(model_dir: Path, work: Path, source) -> tuple[Path, Path]:
    """Optimum's recipe the targets are set against: export, then avx512_vnni dynamic per-channel int8.

    Returns the quantized model as Optimum writes it (timed) and a copy with pooling appended (scored).
    """
    from optimum.exporters.onnx import main_export
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    # library_name="transformers": the plain encoder (last_hidden_state); sentence-transformers' own export
    # would add its pooling, and edgec appends the same pooling to every candidate below instead.
    main_export(str(model_dir), work / "export", task="feature-extraction", do_validation=False, library_name="transformers")
    quantizer = ORTQuantizer.from_pretrained(work / "export", file_name="model.onnx")
    quantizer.quantize(AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True), save_dir=work / "quantized")
    path = work / "quantized" / "model_quantized.onnx"
    # Same pooling as the sentence-transformers model, appended so the metrics compare like with like.
    model = onnx.load(str(path))
    append_pooling(model, hidden="last_hidden_state", mask="attention_mask", mode=source.pooling.mode,
                   normalize=source.pooling.normalize, output="sentence_embedding")
    pooled = work / "optimum_int8_pooled.onnx"
    onnx.save(model, str(pooled))
    return path, pooled


def benchmark_model(name: str, model_dir: Path, work: Path, rounds: int, runs: int, precisions: list[str]) -> list[dict]:
    test = read_sts_benchmark(STS / "sts-test.csv")
    calib = read_sts_benchmark(STS / "sts-train.csv").single_texts()  # calibrate on train, evaluate on test
    source = load_source(model_dir)
    evaluation = reference_outputs(source, test, 512)
    rows: dict[str, dict] = {"PyTorch fp32": {"spearman": evaluation.reference_metric["spearman"], "cosine_mean": 1.0,
                                              "size_mb": sum(p.stat().st_size for p in source.weight_files) / 1e6}}
    timed: dict[str, Path | None] = {"PyTorch fp32": None}
    started = time.perf_counter()
    raw, pooled = optimum_dynamic_int8(model_dir, work / "optimum", source)
    row = measure_model(pooled, "optimum", source.task, evaluation, ParityThresholds(), SessionSettings())
    rows["Optimum dynamic int8"] = {**_metrics(row), "size_mb": raw.stat().st_size / 1e6, "build_s": time.perf_counter() - started}
    timed["Optimum dynamic int8"] = raw
    for precision in precisions:
        started = time.perf_counter()
        out = work / f"edgec-{precision}"
        artifact = edgec.build(model_dir, "ort-x86", recipe=edgec.Recipe(quant=edgec.QuantConfig(precision=precision)),
                               calib=calib, eval=test, out=out, force=True)
        final = artifact.manifest["parity"]["ledger"][-1]
        label = f"edgec {precision}" + (" (ORT fp32, fused)" if precision == "fp32" else "")
        rows[label] = {**{k: final["metrics"][k] for k in ("spearman", "cosine_mean")},
                       "size_mb": artifact.model_path.stat().st_size / 1e6, "build_s": time.perf_counter() - started,
                       "kept_in_float": len(artifact.manifest["stages"].get("fallback", {}).get("kept_in_float", []))}
        timed[label] = artifact.model_path
    vocab = len(source.tokenizer)
    config = BenchConfig(batch=1, seq_len=128, threads=2, warmup=30, runs=runs)
    latencies: dict[str, list[float]] = {label: [] for label in timed}
    for _ in range(rounds):  # interleaved rounds: slow drifts of a shared machine hit every row alike
        for label, path in timed.items():
            result = bench_pytorch(str(model_dir), source.task, vocab, config) if path is None else bench_onnx(str(path), vocab, config, "all")
            latencies[label].append(result.p50_ms)
    for label, values in latencies.items():
        rows[label]["latency_ms"] = statistics.median(values)
    optimum_ms = rows["Optimum dynamic int8"]["latency_ms"]
    return [{"model": name, "runtime": label, **row, "vs_optimum": row["latency_ms"] / optimum_ms} for label, row in rows.items()]


def _metrics(row) -> dict:
    return {"spearman": row.metrics["spearman"], "cosine_mean": row.metrics["cosine_mean"]}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor())
    cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    isa = host()
    return (f"{cpu}, {cores} cores, {platform.system()} {platform.machine()}, int8 instruction set {isa.instruction_set}, "
            f"{'native' if isa.native_bf16 else 'no native'} bf16, Python {platform.python_version()}")


def markdown(results: list[dict], command: str, seconds: float) -> str:
    versions = package_versions()
    lines = [
        f"## {results[0]['model']}: ORT CPU precisions vs PyTorch and Optimum (STS-B test)", "",
        f"Machine: {machine()}. Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        f"Command: `{command}` ({seconds / 60:.0f} min). Latency: batch 1, sequence 128, 2 intra-op threads, "
        "median of per-round p50s, each measured in a fresh process. Calibration: 256 STS-B *train* sentences.", "",
        "| model | runtime | STS-B Spearman | cosine to fp32 | latency ms | vs Optimum int8 | size MB | build s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['model']} | {r['runtime']} | {r['spearman']:.2f} | {r['cosine_mean']:.4f} | {r['latency_ms']:.2f} | "
            f"{r['vs_optimum']:.2f} | {r['size_mb']:.1f} | {r.get('build_s', 0):.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="minilm,mpnet")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    command = ("python benchmarks/run.py " + " ".join(sys.argv[1:])).strip()
    with tempfile.TemporaryDirectory(prefix="edgec-bench-") as tmp:
        for name in args.models.split(","):  # one RESULTS.md section per model, so models can be re-run alone
            started = time.perf_counter()
            results = benchmark_model(name, getattr(models, name)(), Path(tmp) / name, args.rounds, args.runs, args.precisions.split(","))
            table = markdown(results, command, time.perf_counter() - started)
            write_section(args.output, f"ort-precisions-{name}", table)
            (HERE / f"results-ort-{name}.json").write_text(json.dumps(results, indent=1))
            print(table, flush=True)


def write_section(path: Path, name: str, text: str, script: str = "benchmarks/run.py") -> None:
    """Replace the generated block `name` in RESULTS.md (or append it), keeping the hand-written analysis."""
    opening, end = f"<!-- {name}:start", f"<!-- {name}:end -->"
    current = path.read_text() if path.exists() else "# edgec benchmarks\n"
    block = f"{opening} (generated by {script}) -->\n{text}{end}"
    if opening in current:
        current = current[: current.index(opening)] + block + current[current.index(end) + len(end):]
    else:
        current = current.rstrip() + "\n\n" + block + "\n"
    path.write_text(current)


if __name__ == "__main__":
    main()
