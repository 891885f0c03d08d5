"""ONNX Runtime's CoreML (MLProgram) usability check on MiniLM's mobile graph, before and after accelerator shaping.

Before: `--target mobile` as it was (int8, dynamic shapes), checked as it stands and as if its shapes were fixed.
After: `--target mobile --accelerator coreml --fixed-shape 1x128` (fp32, fixed shapes, additive mask, Gather first).
Both calibrate on STS-B *train* sentences and are verified on all of STS-B test by ONNX Runtime loading the .ort
(the fixed graph runs every text padded to 128 tokens). Writes results-coreml-minilm.json and its RESULTS.md section.
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


def build(model_dir: Path, out: Path, mobile: dict | None) -> dict:
    test = read_sts_benchmark(STS / "sts-test.csv")
    calib = read_sts_benchmark(STS / "sts-train.csv").single_texts()
    started = time.perf_counter()
    artifact = edgec.build(model_dir, "mobile", calib=calib, eval=test, out=out, force=True, mobile=mobile)
    seconds = time.perf_counter() - started
    usability = json.loads((artifact.path / "mobile_usability.json").read_text())
    final = artifact.manifest.parity.ledger[-1].metrics
    return {
        "precision": artifact.manifest.precision,
        "usability": usability,
        "spearman": final["spearman"],
        "cosine": final["cosine_mean"],
        "reference": artifact.manifest.parity.reference_metric["spearman"],
        "passed": artifact.manifest.parity.passed,
        "ort_mb": artifact.manifest.sizes.model_bytes / 1e6,
        "build_s": seconds,
        "operators": artifact.manifest.stages.emit.operator_counts,
    }


def markdown(r: dict, command: str) -> str:
    before, after = r["before"], r["after"]
    coreml = before["usability"]["CoreML MLProgram"]
    shaped = after["usability"]["accelerator"]
    share = lambda supported, nodes: f"{supported}/{nodes} ({100 * supported / nodes:.1f}%)"  # noqa: E731
    remaining = "; ".join(f"`{n['node']}` ({n['op']}: {n['why']})" for n in shaped["remaining_nodes"])
    lines = [
        f"## {r['model']}: CoreML MLProgram usability, general mobile graph vs `--accelerator coreml --fixed-shape 1x128`",
        "",
        f"Machine: {r['machine']}. Versions: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()) + ".",
        f"Command: `{command}`. ONNX Runtime's own check (`onnxruntime.tools.mobile_helpers.usability_checker`, "
        "coreml_supported_mlprogram_ops.md) on the graph the .ort was converted from. Spearman on all 1,379 STS-B test pairs "
        f"(ONNX Runtime CPU loading the .ort); reference {before['reference']:.2f}.",
        "",
        "| graph | precision | partitions | nodes CoreML takes | verdict | Spearman | drop | cosine | .ort MB |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| before: `--target mobile`, as it stands | {before['precision']} | {coreml['partitions']} | "
        f"{share(coreml['supported_nodes'], coreml['nodes'])} | {coreml['suitability']} | {before['spearman']:.2f} | "
        f"{before['reference'] - before['spearman']:.2f} | {before['cosine']:.4f} | {before['ort_mb']:.1f} |",
        f"| before, if its shapes were fixed | {before['precision']} | {coreml['partitions_with_fixed_shapes']} | "
        f"{share(coreml['supported_nodes_with_fixed_shapes'], coreml['nodes'])} | {coreml['suitability_with_fixed_shapes']} | | | | |",
        f"| after: `--accelerator coreml --fixed-shape 1x128` | {after['precision']} | {shaped['partitions']} | "
        f"{share(shaped['supported_nodes'], shaped['nodes'])} | {shaped['suitability']} | {after['spearman']:.2f} | "
        f"{after['reference'] - after['spearman']:.2f} | {after['cosine']:.4f} | {after['ort_mb']:.1f} |",
        "",
        f"Before, CoreML lacks: {', '.join(coreml['unsupported_ops'])}. After, the nodes left on the CPU: {remaining}.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    args = parser.parse_args()
    command = ("python benchmarks/coreml_minilm.py " + " ".join(sys.argv[1:])).strip()
    model_dir = getattr(models, args.model)()
    with tempfile.TemporaryDirectory(prefix="edgec-coreml-") as tmp:
        before = build(model_dir, Path(tmp) / "before.zip", None)
        after = build(model_dir, Path(tmp) / "after.zip", {"accelerator": "coreml", "fixed_batch": 1, "fixed_seq": 128})
    result = {
        "model": args.model,
        "before": before,
        "after": after,
        "machine": machine(),
        "versions": package_versions(),
    }
    (HERE / f"results-coreml-{args.model}.json").write_text(json.dumps(result, indent=1))
    table = markdown(result, command)
    write_section(HERE / "RESULTS.md", f"coreml-{args.model}", table, "benchmarks/coreml_minilm.py")
    print(table)


if __name__ == "__main__":
    main()
