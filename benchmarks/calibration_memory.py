"""Peak memory of a whole int8 build against the number of calibration texts (mpnet by default).

    python benchmarks/calibration_memory.py --model mpnet --samples 256,1024   # writes results-calibration-memory-mpnet.json
    python benchmarks/calibration_memory.py --model mpnet --render             # RESULTS.md section from the committed JSON

Each build is `edgec build MODEL --precision int8 --calib sts-train.txt --calib-samples N --eval sts-test.jsonl`, run
under `/usr/bin/time -v` in a process of its own; the peak is its "Maximum resident set size". Calibration texts are
STS-B *train* sentences; the STS-B Spearman is measured on test, which nothing was chosen on.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import models  # noqa: E402
from run import machine, write_section  # noqa: E402

from edgec.artifacts.artifact import load_artifact, package_versions  # noqa: E402
from edgec.data import read_sts_benchmark  # noqa: E402

STS = HERE.parent.parent / "shared" / "data" / "stsbenchmark"


def data_files(folder: Path) -> tuple[Path, Path]:
    """STS-B train sentences (calibration) and STS-B test pairs (eval), written to a temporary folder."""
    calib, evaluation = folder / "sts-train.txt", folder / "sts-test.jsonl"
    calib.write_text("".join(t + "\n" for t in read_sts_benchmark(STS / "sts-train.csv").single_texts().texts))
    rows = read_sts_benchmark(STS / "sts-test.csv").examples
    evaluation.write_text(
        "".join(json.dumps({"text": e.text, "text_pair": e.text_pair, "score": e.score}) + "\n" for e in rows)
    )
    return calib, evaluation


def measure(model: Path, samples: int, calib: Path, evaluation: Path, out: Path) -> dict:
    command = [
        sys.executable,
        "-m",
        "edgec",
        "build",
        str(model),
        "--target",
        "ort-x86",
        "--precision",
        "int8",
        "--calib",
        str(calib),
        "--calib-samples",
        str(samples),
        "--eval",
        str(evaluation),
        "--out",
        str(out),
        "--force",
    ]
    run = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True)
    peak_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", run.stderr).group(1)
    manifest = load_artifact(out).manifest if run.returncode in (0, 1) and out.exists() else None
    final = manifest.parity.ledger[-1].metrics if manifest else {}
    return {
        "calib_samples": samples,
        "exit_code": run.returncode,
        "peak_rss_gib": round(peak_kib / 2**20, 2),
        "wall": wall,
        "spearman": final.get("spearman"),
        "reference_spearman": manifest.parity.reference_metric.get("spearman") if manifest else None,
        "eval_examples": manifest.parity.eval_examples if manifest else None,
    }


def markdown(result: dict) -> str:
    rows = result["runs"]
    base = rows[0]["peak_rss_gib"]
    return "\n".join(
        [
            f"## Peak memory of an int8 build against calibration size: {result['model']}",
            "",
            f"Machine: {result['machine']}. Command: `{result['command']}`. Each build runs under `/usr/bin/time -v` in a process of "
            "its own (the peak is the whole build's: load, reference, export, fusion, calibration, quantization, fallback, parity). "
            "Calibration: STS-B train sentences; Spearman on STS-B test (the gate's held-out 70% of it).",
            "",
            "| calibration texts | peak RSS GiB | vs the first row | wall time | STS-B Spearman (fp32) | exit code |",
            "|---|---|---|---|---|---|",
            *(
                f"| {r['calib_samples']} | {r['peak_rss_gib']:.2f} | {r['peak_rss_gib'] / base:.2f}x | {r['wall']} | "
                f"{r['spearman']:.2f} ({r['reference_spearman']:.2f}) | {r['exit_code']} |"
                for r in rows
            ),
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mpnet")
    parser.add_argument("--samples", default="256,1024")
    parser.add_argument("--render", action="store_true")
    args = parser.parse_args()
    results = HERE / f"results-calibration-memory-{args.model}.json"
    if not args.render:
        with tempfile.TemporaryDirectory(prefix="edgec-memory-") as tmp:
            calib, evaluation = data_files(Path(tmp))
            runs = [
                measure(getattr(models, args.model)(), int(n), calib, evaluation, Path(tmp) / f"out-{n}")
                for n in args.samples.split(",")
            ]
        results.write_text(
            json.dumps(
                {
                    "model": args.model,
                    "machine": machine(),
                    "versions": package_versions(),
                    "runs": runs,
                    "command": f"python benchmarks/calibration_memory.py --model {args.model} --samples {args.samples}",
                },
                indent=2,
            )
            + "\n"
        )
    text = markdown(json.loads(results.read_text()))
    write_section(HERE / "RESULTS.md", f"calibration-memory-{args.model}", text, "benchmarks/calibration_memory.py")
    print(text)


if __name__ == "__main__":
    main()
