"""Side-by-side benchmark: PyTorch fp32, Optimum dynamic int8 and edgec's artifacts, in one run, over sequence lengths.

    python benchmarks/run.py --models mpnet --build-only   # build (and score) every row; artifacts kept in benchmarks/work/run
    python benchmarks/run.py --models mpnet                # reuse them, time every row in interleaved rounds, write RESULTS.md
    python benchmarks/run.py --models minilm --rounds 1 --lengths 128 --rebuild
    python benchmarks/run.py --render                     # RESULTS.md sections from the committed JSONs

Rows per model: PyTorch fp32; Optimum dynamic int8 with the preset Optimum has for this host's instruction set;
edgec fp32 and int8 (and, where edgec fused attention that adds a position bias, the same without that fusion);
edgec int8 of the model pruned to 0.5 and 0.85 of its MACs (no distillation). Accuracy: STS-B test Spearman (x100)
and cosine to the fp32 PyTorch embeddings (mean and worst pair), calibration on 256 STS-B *train* sentences.
Latency: batch 1, 2 intra-op threads, synthetic inputs of each length; every (row, length) measured once per round in
a fresh process, rounds interleaved, the median of the per-round p50s reported.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import models  # noqa: E402

import edgec  # noqa: E402
from edgec.api import compress  # noqa: E402
from edgec.artifacts.artifact import load_artifact, package_versions  # noqa: E402
from edgec.data import read_sts_benchmark  # noqa: E402
from edgec.hardware import host  # noqa: E402
from edgec.ops.pooling import append_pooling  # noqa: E402
from edgec.parity.evalset import reference_outputs  # noqa: E402
from edgec.parity.runtime import measure_model  # noqa: E402
from edgec.recipe import PruneConfig  # noqa: E402
from edgec.running.bench import BenchConfig, bench_onnx, bench_pytorch  # noqa: E402
from edgec.source import load_source  # noqa: E402
from edgec.sweep import MEASURE_ONLY  # noqa: E402
from edgec.targets import SessionSettings, load_target  # noqa: E402

STS = HERE.parent.parent / "shared" / "data" / "stsbenchmark"
WORK = HERE / "work" / "run"
# Optimum's AutoQuantizationConfig preset per host instruction set (it has none for AMX or AVX-VNNI on AVX2 cores).
OPTIMUM_PRESETS = {
    "avx2": "avx2",
    "avx-vnni": "avx2",
    "avx512": "avx512",
    "avx512-vnni": "avx512_vnni",
    "amx": "avx512_vnni",
    "arm-dotprod": "arm64",
    "arm-i8mm": "arm64",
}
PYTORCH, OPTIMUM = "PyTorch fp32", "Optimum dynamic int8"


def optimum_preset() -> str:
    return OPTIMUM_PRESETS.get(host().instruction_set, "avx2")


def optimum_dynamic_int8(model_dir: Path, work: Path, source) -> tuple[Path, Path]:
    """Optimum's recipe the targets are set against: export, then its dynamic per-channel int8 preset for this host.

    Returns the quantized model as Optimum writes it (timed) and a copy with pooling appended (scored).
    """
    from optimum.exporters.onnx import main_export
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    # library_name="transformers": the plain encoder (last_hidden_state); sentence-transformers' own export
    # would add its pooling, and edgec appends the same pooling to every candidate below instead.
    main_export(
        str(model_dir), work / "export", task="feature-extraction", do_validation=False, library_name="transformers"
    )
    quantizer = ORTQuantizer.from_pretrained(work / "export", file_name="model.onnx")
    preset = getattr(AutoQuantizationConfig, optimum_preset())
    quantizer.quantize(preset(is_static=False, per_channel=True), save_dir=work / "quantized")
    path = work / "quantized" / "model_quantized.onnx"
    model = onnx.load(str(path))
    append_pooling(
        model,
        hidden="last_hidden_state",
        mask="attention_mask",
        mode=source.pooling.mode,
        normalize=source.pooling.normalize,
        output="sentence_embedding",
    )
    pooled = work / "optimum_int8_pooled.onnx"
    onnx.save(model, str(pooled))
    return path, pooled


def _accuracy(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("spearman", "cosine_mean", "cosine_min")}


def _cached(folder: Path, rebuild: bool, make) -> dict:
    """A row's facts from folder/row.json, or make() them (building into folder) and save them there."""
    record = folder / "row.json"
    if record.exists() and not rebuild:
        return json.loads(record.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    started = time.perf_counter()
    row = {**make(folder), "build_s": time.perf_counter() - started}
    record.write_text(json.dumps(row, indent=1))
    return row


def edgec_row(model_dir: Path, folder: Path, profile, precision: str, calib, test, evaluation) -> dict:
    """Build one edgec row (its ledger on 100 test pairs, to save time) and score the artifact on all of STS-B test."""
    artifact = edgec.build(
        model_dir,
        profile,
        recipe=edgec.Recipe(quant=edgec.QuantConfig(precision=precision), parity=MEASURE_ONLY),
        calib=calib,
        eval=test.sample(100, 0),
        out=folder / "artifact",
        force=True,
    )
    manifest = artifact.manifest
    scored = measure_model(
        artifact.model_path, "test", "feature-extraction", evaluation, MEASURE_ONLY, artifact.session
    )
    return {
        **_accuracy(scored.metrics),
        "path": str(artifact.model_path),
        "size_mb": artifact.model_path.stat().st_size / 1e6,
        "biased_attention": manifest.stages.optimize.biased_attention if manifest.stages.optimize else 0,
        "quantization": manifest.stages.quantize.weights if manifest.stages.quantize else None,
    }


def pruned_folder(model_dir: Path, folder: Path, fraction: float, multiple: int, calib) -> Path:
    """The model pruned to keep 1 - fraction of its MACs (no distillation; each layer's FFN neurons rounded to a
    multiple of `multiple`), saved as a Hugging Face folder."""
    out = folder / "model"
    recipe = edgec.Recipe(
        prune=PruneConfig(fraction=fraction, neuron_multiple=multiple), max_length=128, parity=MEASURE_ONLY
    )
    summary = compress(model_dir, recipe, calib=calib, out=out, force=True)
    (folder / "summary.json").write_text(
        json.dumps({k: summary.prune.to_json()[k] for k in ("macs_before", "macs_after", "heads_after", "ffn_after")})
    )
    return out


def build_rows(
    name: str,
    model_dir: Path,
    work: Path,
    precisions: list[str],
    fractions: list[float],
    multiples: list[int],
    rebuild: bool,
) -> dict[str, dict]:
    """Every row of one model: how to time it (path; None for PyTorch) and its accuracy, size and build time."""
    test = read_sts_benchmark(STS / "sts-test.csv")
    calib = read_sts_benchmark(STS / "sts-train.csv").single_texts()  # calibrate on train, evaluate on test
    source = load_source(model_dir)
    evaluation = reference_outputs(source, test, 512)
    rows = {
        PYTORCH: {
            "spearman": evaluation.reference_metric["spearman"],
            "cosine_mean": 1.0,
            "cosine_min": 1.0,
            "path": None,
            "size_mb": sum(p.stat().st_size for p in source.weight_files) / 1e6,
        }
    }

    def optimum(folder: Path) -> dict:
        raw, pooled = optimum_dynamic_int8(model_dir, folder, source)
        row = measure_model(pooled, "optimum", source.task, evaluation, MEASURE_ONLY, SessionSettings())
        return {
            **_accuracy(row.metrics),
            "path": str(raw),
            "size_mb": raw.stat().st_size / 1e6,
            "preset": optimum_preset(),
        }

    rows[OPTIMUM] = _cached(work / "optimum", rebuild, optimum)
    profile = load_target("ort-x86")
    for precision in precisions:
        fused = _cached(
            work / f"edgec-{precision}",
            rebuild,
            lambda f, p=precision: edgec_row(model_dir, f, profile, p, calib, test, evaluation),
        )
        rows[f"edgec {precision}"] = fused
        if fused["biased_attention"]:
            unfused = dataclasses.replace(profile, fuse_biased_attention=False)
            rows[f"edgec {precision}, attention unfused"] = _cached(
                work / f"edgec-{precision}-unfused",
                rebuild,
                lambda f, p=precision: edgec_row(model_dir, f, unfused, p, calib, test, evaluation),  # noqa: B023
            )
    for fraction in fractions:
        for multiple in [1, *multiples]:

            def pruned(folder: Path, fraction=fraction, multiple=multiple) -> dict:
                pruned_model = pruned_folder(model_dir, folder, fraction, multiple, calib.sample(256, 0))
                row = edgec_row(pruned_model, folder, profile, "int8", calib, test, evaluation)
                summary = json.loads((folder / "summary.json").read_text())
                return {
                    **row,
                    "macs_kept": summary["macs_after"] / summary["macs_before"],
                    "heads": summary["heads_after"],
                    "ffn": summary["ffn_after"],
                }

            suffix = f", neurons x{multiple}" if multiple > 1 else ""
            rows[f"edgec int8, pruned {fraction}{suffix}"] = _cached(
                work / f"pruned-{fraction}-x{multiple}", rebuild, pruned
            )
    return rows


def time_rows(
    rows: dict[str, dict], model_dir: Path, vocab: int, lengths: list[int], rounds: int, runs: int
) -> tuple[dict[str, dict[int, list[float]]], dict[str, dict[int, list[float | None]]]]:
    """Each (row, length)'s p50 in every round, and the other load of every measurement (BenchResult.other_load);
    every round visits every row and length, each in a fresh process."""
    task = load_source(model_dir).task
    p50s: dict[str, dict[int, list[float]]] = {label: {n: [] for n in lengths} for label in rows}
    loads: dict[str, dict[int, list[float | None]]] = {label: {n: [] for n in lengths} for label in rows}
    for _ in range(rounds):  # interleaved rounds: slow drifts of a shared machine hit every row alike
        for length in lengths:
            config = BenchConfig(batch=1, seq_len=length, threads=2, warmup=10, runs=runs)
            for label, row in rows.items():
                path = row["path"]
                if path is None:
                    result = bench_pytorch(
                        str(model_dir), task, vocab, dataclasses.replace(config, runs=max(10, runs // 3))
                    )
                else:
                    settings = (
                        load_artifact(Path(path).parent).session
                        if (Path(path).parent / "edgec.json").exists()
                        else SessionSettings()
                    )
                    result = bench_onnx(path, vocab, config, settings)
                p50s[label][length].append(result.p50_ms)
                loads[label][length].append(result.other_load)
    return p50s, loads


def per_row(rounds: dict[str, dict[int, list[float]]], statistic) -> dict[str, dict[int, float]]:
    """`statistic` (min, statistics.median) of each (row, length)'s round p50s."""
    return {label: {n: statistic(values) for n, values in by_length.items()} for label, by_length in rounds.items()}


STATISTICS = {
    "median": "median of per-round p50s",
    # This VM runs the same file at two speeds (e.g. mpnet int8 at 40 or 62 ms) in consecutive fresh processes
    # with no other process on the CPU: a slowdown from outside the guest. The fastest round is the machine
    # undisturbed, the same statistic for every row; the spread table shows how far the rounds differed.
    "fastest round": "the fastest of the per-round p50s (the slowest/fastest spread is in the last table)",
}


def load_line(results: list[dict]) -> str:
    """What else ran while timing: the other load of every measurement (older JSONs did not record it)."""
    loads = [v for r in results for by_round in r.get("other_load", {}).values() for v in by_round if v is not None]
    if not loads:
        return "Other processes' share of the CPU while timing: not recorded."
    return (
        f"Other processes' share of the CPU while timing ({len(loads)} measurements): median {statistics.median(loads):.1%}, "
        f"worst {max(loads):.1%}."
    )


def results_file(model: str) -> Path:
    return HERE / f"results-ort-{model}.json"


def machine() -> str:
    cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    cpu = host()
    return (
        f"{cpu.model}, {cores} cores, {platform.system()} {platform.machine()}, int8 instruction set {cpu.instruction_set}, "
        f"{'native' if cpu.native_bf16 else 'no native'} bf16, Python {platform.python_version()}"
    )


def ratio_rows(results: list[dict]) -> list[tuple[str, str]]:
    """(what, against what) for every ratio the targets are stated in."""
    labels = [r["runtime"] for r in results]
    pairs = [(label, OPTIMUM) for label in labels if label.startswith("edgec int8")]
    pairs += [
        (label.removesuffix(", attention unfused"), label) for label in labels if label.endswith("attention unfused")
    ]
    pairs += [(label, "edgec int8") for label in labels if "pruned" in label]
    pairs += [(label, label.split(", neurons")[0]) for label in labels if ", neurons x" in label]
    return pairs


def markdown(record: dict) -> str:
    """The RESULTS.md section of one model's run, from its results JSON."""
    name, results, lengths = record["model"], record["rows"], record["lengths"]
    versions = record["versions"]
    by_label = {r["runtime"]: r for r in results}
    preset = by_label[OPTIMUM].get("preset", "?")
    lines = [
        f"## {name}: edgec vs PyTorch and Optimum, by sequence length (STS-B test)",
        "",
        f"Machine: {record['machine']}. Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        f"Command: `{record['command']}` ({record['timing_s'] / 60:.0f} min of timing). Latency: batch 1, 2 intra-op threads, "
        f"{STATISTICS[record.get('statistic', 'median')]}, "
        f"each measured in a fresh process, rounds interleaved. Optimum: dynamic int8, its `{preset}` preset (per-channel), "
        "the one it has for this host's instruction set. Calibration: 256 STS-B *train* sentences.",
        load_line(results),
        "",
        "| row | STS-B Spearman | cosine to fp32 (mean / worst) | size MB | MACs kept | "
        + " | ".join(f"{n} tok ms" for n in lengths)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(lengths),
    ]
    for r in results:
        macs = f"{r['macs_kept']:.2f}" if "macs_kept" in r else ""
        lines.append(
            f"| {r['runtime']} | {r['spearman']:.2f} | {r['cosine_mean']:.4f} / {r['cosine_min']:.4f} | {r['size_mb']:.1f} | {macs} | "
            + " | ".join(f"{r['latency_ms'][str(n)]:.2f}" for n in lengths)
            + " |"
        )
    lines += ["", "| ratio | " + " | ".join(f"{n} tok" for n in lengths) + " |", "|---|" + "---|" * len(lengths)]
    for what, against in ratio_rows(results):
        values = [by_label[what]["latency_ms"][str(n)] / by_label[against]["latency_ms"][str(n)] for n in lengths]
        lines.append(f"| {what} / {against} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
    if all("p50_rounds" in r for r in results):
        lines += [
            "",
            "| slowest round / fastest round | " + " | ".join(f"{n} tok" for n in lengths) + " |",
            "|---|" + "---|" * len(lengths),
        ]
        for r in results:
            spreads = [max(r["p50_rounds"][str(n)]) / min(r["p50_rounds"][str(n)]) for n in lengths]
            lines.append(f"| {r['runtime']} | " + " | ".join(f"{v:.2f}" for v in spreads) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="minilm,mpnet")
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument(
        "--fractions", default="0.5,0.85", help="Prune fractions for the pruned int8 rows ('' for none)."
    )
    parser.add_argument(
        "--neuron-multiples", default="", help="Also prune with FFN neurons rounded to these multiples (e.g. 32,64)."
    )
    parser.add_argument("--lengths", default="32,64,128,256")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--build-only", action="store_true", help="Build and score the rows, time nothing.")
    parser.add_argument(
        "--rebuild", action="store_true", help="Build every row again instead of reusing benchmarks/work/run."
    )
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--render", action="store_true", help="Only rewrite RESULTS.md from the committed JSONs.")
    args = parser.parse_args()
    if args.render:
        for name in args.models.split(","):
            write_section(args.output, f"ort-precisions-{name}", markdown(json.loads(results_file(name).read_text())))
        return
    command = ("python benchmarks/run.py " + " ".join(sys.argv[1:])).strip()
    lengths = [int(n) for n in args.lengths.split(",")]
    fractions = [float(f) for f in args.fractions.split(",") if f]
    for name in args.models.split(","):  # one RESULTS.md section per model, so models can be re-run alone
        model_dir = getattr(models, name)()
        multiples = [int(m) for m in args.neuron_multiples.split(",") if m]
        rows = build_rows(name, model_dir, WORK / name, args.precisions.split(","), fractions, multiples, args.rebuild)
        if args.build_only:
            print(
                json.dumps(
                    {label: {k: v for k, v in row.items() if k != "path"} for label, row in rows.items()}, indent=1
                ),
                flush=True,
            )
            continue
        started = time.perf_counter()
        rounds, loads = time_rows(
            rows, model_dir, len(load_source(model_dir).tokenizer), lengths, args.rounds, args.runs
        )
        latencies = per_row(rounds, min)
        results = [
            {
                "model": name,
                "runtime": label,
                **{k: v for k, v in row.items() if k != "path"},
                "latency_ms": {str(n): ms for n, ms in latencies[label].items()},
                "p50_rounds": {str(n): values for n, values in rounds[label].items()},
                "other_load": {str(n): values for n, values in loads[label].items()},
                "host": host().to_dict(),
            }
            for label, row in rows.items()
        ]
        record = {
            "model": name,
            "machine": machine(),
            "versions": package_versions(),
            "command": command,
            "timing_s": time.perf_counter() - started,
            "statistic": "fastest round",
            "lengths": lengths,
            "rows": results,
        }
        results_file(name).write_text(json.dumps(record, indent=1))
        table = markdown(record)
        write_section(args.output, f"ort-precisions-{name}", table)
        print(table, flush=True)


def write_section(path: Path, name: str, text: str, script: str = "benchmarks/run.py") -> None:
    """Replace the generated block `name` in RESULTS.md (or append it), keeping the hand-written analysis."""
    opening, end = f"<!-- {name}:start", f"<!-- {name}:end -->"
    current = path.read_text() if path.exists() else "# edgec benchmarks\n"
    block = f"{opening} (generated by {script}) -->\n{text}{end}"
    if opening in current:
        current = current[: current.index(opening)] + block + current[current.index(end) + len(end) :]
    else:
        current = current.rstrip() + "\n\n" + block + "\n"
    path.write_text(current)


if __name__ == "__main__":
    main()
