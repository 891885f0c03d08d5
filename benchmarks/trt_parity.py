"""TensorRT artifacts on a CPU-only machine: simulated parity on STS-B test, and what each artifact holds.

Builds `--target trt-int8` and trt-fp16 for each model, calibrating on STS-B *train* sentences (which also decide
which nodes stay fp32) and verifying on STS-B test, then writes a table into RESULTS.md. Without tensorrt and a GPU
every parity row is simulated: ONNX Runtime CPU runs the fp16-typed ONNX the engine is built from, with every fp16
tensor rounded through an explicit Cast pair.
"""

from __future__ import annotations

import argparse
import json
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
from edgec.data import read_sts_benchmark  # noqa: E402


def build_row(name: str, model_dir: Path, target: str, work: Path) -> dict:
    test = read_sts_benchmark(STS / "sts-test.csv")
    calib = read_sts_benchmark(STS / "sts-train.csv").single_texts()
    started = time.perf_counter()
    artifact = edgec.build(model_dir, target, calib=calib, eval=test, out=work / f"{name}-{target}", force=True)
    manifest = artifact.manifest
    final, reference = manifest.parity.ledger[-1], manifest.parity.reference_metric["spearman"]
    spec = json.loads((artifact.path / "trt_build.json").read_text())
    profile = next(iter(spec["profiles"][0].values()))
    typing = manifest.stages.emit.typing
    return {
        "model": name,
        "target": target,
        "reference": reference,
        "spearman": final.metrics["spearman"],
        "drop": reference - final.metrics["spearman"],
        "cosine_mean": final.metrics["cosine_mean"],
        "simulated": final.simulated,
        "simulation_model": final.model,
        "passed": manifest.parity.passed,
        "engine": manifest.engine["status"],
        "strongly_typed": spec["strongly_typed"],
        "tensorrt_majors": spec["tensorrt_majors"],
        "fp16_nodes": typing["fp16_nodes"],
        "fp32_nodes": typing["fp32_nodes"],
        "fp32_by_data": sorted(typing["fp32_by_data"]),
        "kept_in_float": len(fallback.kept_in_float) if (fallback := manifest.stages.fallback) else 0,
        "profile": "/".join("x".join(map(str, profile[k])) for k in ("min", "opt", "max")),
        "files_mb": {k: round(v["bytes"] / 1e6, 1) for k, v in manifest.files.items() if v["bytes"] > 1e6},
        "build_s": time.perf_counter() - started,
    }


def markdown(rows: list[dict], command: str) -> str:
    versions = package_versions()
    lines = [
        "## TensorRT artifacts: simulated parity on STS-B test (no GPU here)",
        "",
        f"Machine: {machine()}. Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        f"Command: `{command}`. Calibration: 256 STS-B *train* sentences (they also set which nodes stay fp32); parity: "
        "all 1,379 STS-B test pairs. Every spec is strongly typed with no precision flags, for TensorRT 10 and 11. "
        "'simulated' = ONNX Runtime CPU ran the typed ONNX in the engine's place, every fp16 tensor rounded through an "
        "fp32->fp16->fp32 Cast pair. Engines: none built (no GPU, no tensorrt).",
        "",
        "| model | target | reference Spearman | artifact Spearman | drop | cosine to fp32 | fp16 nodes | fp32 nodes (why) | int8 MatMuls kept in float | profile min/opt/max (batch x seq) | parity | files > 1 MB | build s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        files = ", ".join(f"{k} {v}" for k, v in r["files_mb"].items())
        verdict = ("pass" if r["passed"] else "FAIL") + (" (simulated)" if r["simulated"] else "")
        fp32 = ", ".join(f"{k} {v}" for k, v in r["fp32_nodes"].items())
        lines.append(
            f"| {r['model']} | {r['target']} | {r['reference']:.2f} | {r['spearman']:.2f} | {r['drop']:.2f} | {r['cosine_mean']:.4f} | "
            f"{r['fp16_nodes']} | {fp32} | {r['kept_in_float']} | {r['profile']} | {verdict} | {files} | {r['build_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--builds", default="minilm:trt-int8,minilm:trt-fp16,mpnet:trt-int8,mpnet:trt-fp16", help="model:target pairs"
    )
    args = parser.parse_args()
    command = ("python benchmarks/trt_parity.py " + " ".join(sys.argv[1:])).strip()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgec-trt-") as tmp:
        for pair in args.builds.split(","):
            name, target = pair.split(":")
            rows.append(build_row(name, getattr(models, name)(), target, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    (HERE / "results-trt-parity.json").write_text(json.dumps(rows, indent=1))
    table = markdown(rows, command)
    write_section(HERE / "RESULTS.md", "trt-parity", table, "benchmarks/trt_parity.py")
    print(table)


if __name__ == "__main__":
    main()
