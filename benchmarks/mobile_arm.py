"""Mobile bundle and ARM64 artifact of a model: bundle size and .ort parity, then parity on emulated aarch64.

Builds `--target mobile` (int8, the .zip) and `--target ort-arm64` (int8), calibrating on STS-B *train*
sentences and verifying on STS-B test, then runs the ARM64 artifact on aarch64 ONNX Runtime under qemu
(`edgec verify --emulate aarch64`) on `--samples` test pairs (default: all 1,379). Writes RESULTS.md.
"""

from __future__ import annotations

import argparse
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
from edgec.artifacts.artifact_ops import verify_emulated  # noqa: E402
from edgec.data import read_sts_benchmark  # noqa: E402


def build(model_dir: Path, target: str, out: Path) -> tuple[edgec.Artifact, float]:
    test = read_sts_benchmark(STS / "sts-test.csv")
    calib = read_sts_benchmark(STS / "sts-train.csv").single_texts()
    started = time.perf_counter()
    artifact = edgec.build(model_dir, target, calib=calib, eval=test, out=out, force=True)
    return artifact, time.perf_counter() - started


def measure(name: str, samples: int, work: Path) -> dict:
    model_dir = getattr(models, name)()
    mobile, mobile_s = build(model_dir, "mobile", work / f"{name}-mobile.zip")
    arm, arm_s = build(model_dir, "ort-arm64", work / f"{name}-arm64")
    test = read_sts_benchmark(STS / "sts-test.csv")
    started = time.perf_counter()
    row, run = verify_emulated(arm, test, samples=samples)
    emulated_s = time.perf_counter() - started
    final = lambda a: a.manifest.parity.ledger[-1].metrics  # noqa: E731
    return {
        "model": name,
        "reference": mobile.manifest.parity.reference_metric["spearman"],
        "mobile_zip_mb": (work / f"{name}-mobile.zip").stat().st_size / 1e6,
        "mobile_ort_mb": mobile.manifest.sizes.model_bytes / 1e6,
        "mobile_spearman": final(mobile)["spearman"],
        "mobile_cosine": final(mobile)["cosine_mean"],
        "mobile_build_s": mobile_s,
        "mobile_usability": mobile.manifest.stages.emit.usability,
        "arm_host_spearman": final(arm)["spearman"],
        "arm_host_cosine": final(arm)["cosine_mean"],
        "arm_build_s": arm_s,
        "emulated_spearman": row.metrics["spearman"],
        "emulated_cosine": row.metrics["cosine_mean"],
        "emulated_passed": row.passed,
        "emulated_pairs": min(samples, len(test)),
        "emulated_runtime": run.runtime,
        "emulated_s": emulated_s,
        "emulated_ms_per_batch": statistics.median(run.latency_ms),
    }


def markdown(r: dict, command: str) -> str:
    versions = package_versions()
    ref = r["reference"]
    usability = ", ".join(f"{k}: {v}" for k, v in r["mobile_usability"].items())
    return "\n".join(
        [
            f"## {r['model']}: mobile bundle and ARM64 on emulated aarch64 (STS-B test)",
            "",
            f"Machine: {machine()}. Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
            f"Command: `{command}`. Calibration: 256 STS-B *train* sentences. Reference (PyTorch fp32) Spearman {ref:.2f}.",
            "",
            "| artifact | measured by | pairs | Spearman | drop | cosine to fp32 | size | build / run s |",
            "|---|---|---|---|---|---|---|---|",
            f"| mobile int8 (`model.ort` in the zip) | ONNX Runtime loading the .ort (x86 host) | 1379 | {r['mobile_spearman']:.2f} | "
            f"{ref - r['mobile_spearman']:.2f} | {r['mobile_cosine']:.4f} | zip {r['mobile_zip_mb']:.1f} MB (.ort {r['mobile_ort_mb']:.1f} MB) | {r['mobile_build_s']:.0f} |",
            f"| ort-arm64 int8 | ONNX Runtime x86 host (build ledger) | 1379 | {r['arm_host_spearman']:.2f} | {ref - r['arm_host_spearman']:.2f} | "
            f"{r['arm_host_cosine']:.4f} | | {r['arm_build_s']:.0f} |",
            f"| ort-arm64 int8 | {r['emulated_runtime']} | {r['emulated_pairs']} | {r['emulated_spearman']:.2f} | "
            f"{ref - r['emulated_spearman']:.2f} | {r['emulated_cosine']:.4f} | | {r['emulated_s']:.0f} |",
            "",
            f"Mobile usability (ORT's check on the bundle's graph): {usability}. Emulated latency, NOT a device figure: "
            f"median {r['emulated_ms_per_batch']:.0f} ms per batch of up to 32 texts under qemu.",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--samples", type=int, default=1379, help="STS-B test pairs run on emulated aarch64")
    args = parser.parse_args()
    command = ("python benchmarks/mobile_arm.py " + " ".join(sys.argv[1:])).strip()
    with tempfile.TemporaryDirectory(prefix="edgec-mobile-") as tmp:
        result = measure(args.model, args.samples, Path(tmp))
    (HERE / f"results-mobile-arm-{args.model}.json").write_text(json.dumps(result, indent=1))
    table = markdown(result, command)
    write_section(HERE / "RESULTS.md", f"mobile-arm-{args.model}", table, "benchmarks/mobile_arm.py")
    print(table)


if __name__ == "__main__":
    main()
