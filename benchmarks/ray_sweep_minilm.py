"""A 12-cell MiniLM sweep (prune 0-0.5 x fp32/int8) run serially and on a local Ray instance: wall times, same rows.

Both sweeps build the same cells from scratch (calibration: 256 STS-B *train* sentences; metric: Spearman on the
first `--pairs` STS-B test pairs) and time each artifact at batch 1, sequence 128, 2 threads. Serially every build
and timing runs in this process, one after another; on Ray every build is a 1-CPU task (two at a time on this
machine) and every timing a task holding all of the node's CPUs. Writes results-ray-sweep-minilm.json and its
RESULTS.md section.
"""

from __future__ import annotations

import argparse
import json
import os
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
from edgec.ray_sweep import RayCluster  # noqa: E402
from edgec.running.bench import BenchConfig  # noqa: E402
from edgec.sweep import sweep  # noqa: E402

FRACTIONS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
PRECISIONS = ["fp32", "int8"]
SAME = ("metric", "value", "drop", "cosine_mean", "size_mb")


def run(model_dir: Path, out: Path, pairs: int, ray: RayCluster | None) -> tuple[list[dict], float]:
    test = read_sts_benchmark(STS / "sts-test.csv")
    test = edgec.Dataset(test.examples[:pairs], f"{test.source} (first {pairs} pairs)")
    calib = read_sts_benchmark(STS / "sts-train.csv").single_texts()
    started = time.perf_counter()
    rows = sweep(
        model_dir,
        "ort-x86",
        fractions=FRACTIONS,
        precisions=PRECISIONS,
        calib=calib,
        eval=test,
        out=out,
        force=True,
        bench=BenchConfig(batch=1, seq_len=128, threads=2, warmup=10, runs=100),
        ray=ray,
    )
    return rows, time.perf_counter() - started


def markdown(r: dict, command: str) -> str:
    lines = [
        f"## {r['model']}: a 12-cell sweep, serial vs local Ray",
        "",
        f"Machine: {r['machine']}. Versions: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()) + ".",
        f"Command: `{command}`. Cells: prune {', '.join(f'{f:g}' for f in FRACTIONS)} x {', '.join(PRECISIONS)}; Spearman on the first "
        f"{r['pairs']} STS-B test pairs; latency batch 1, sequence 128, 2 threads.",
        "",
        "| run | wall time | cells | failed | rows equal to serial (metric, drop, cosine, size) | latency measured on |",
        "|---|---|---|---|---|---|",
        f"| serial | {r['serial_s'] / 60:.1f} min | {len(r['serial'])} | {sum(bool(x['error']) for x in r['serial'])} | | {r['serial_timed_on']} |",
        f"| Ray (local, {r['ray_cpus']} CPUs) | {r['ray_s'] / 60:.1f} min ({r['ray_s'] / r['serial_s']:.2f}x the serial time) | {len(r['ray'])} | "
        f"{sum(bool(x['error']) for x in r['ray'])} | {r['equal_rows']} of {len(r['serial'])} | {r['ray_timed_on']} |",
        "",
        "| cell | Spearman | latency ms serial | latency ms Ray | size MB |",
        "|---|---|---|---|---|",
    ]
    for a, b in zip(r["serial"], r["ray"]):
        lines.append(
            f"| {a['name']} | {a['value']:.2f} | {a['latency_ms']:.2f} | {b['latency_ms']:.2f} | {a['size_mb']:.1f} |"
        )
    return "\n".join(lines) + "\n\n"


def _timed_on(folder: Path) -> str:
    text = (folder / "sweep.md").read_text()
    return text.split("Latency measured on ", 1)[1].split(".\n", 1)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--render", action="store_true", help="only rewrite the RESULTS.md section from the saved JSON")
    args = parser.parse_args()
    if args.render:
        saved = json.loads((HERE / f"results-ray-sweep-{args.model}.json").read_text())
        write_section(
            HERE / "RESULTS.md",
            f"ray-sweep-{args.model}",
            markdown(saved, saved["command"]),
            "benchmarks/ray_sweep_minilm.py",
        )
        return
    command = ("python benchmarks/ray_sweep_minilm.py " + " ".join(sys.argv[1:])).strip()
    model_dir = getattr(models, args.model)()
    with tempfile.TemporaryDirectory(prefix="edgec-ray-bench-") as tmp:
        serial, serial_s = run(model_dir, Path(tmp) / "serial", args.pairs, None)
        on_ray, ray_s = run(model_dir, Path(tmp) / "ray", args.pairs, RayCluster())
        timed = {"serial_timed_on": _timed_on(Path(tmp) / "serial"), "ray_timed_on": _timed_on(Path(tmp) / "ray")}
    equal = sum(all(a[k] == b[k] for k in SAME) for a, b in zip(serial, on_ray))
    result = {
        "model": args.model,
        "pairs": args.pairs,
        "serial_s": serial_s,
        "ray_s": ray_s,
        "ray_cpus": os.cpu_count(),
        "equal_rows": equal,
        **timed,
        "serial": serial,
        "ray": on_ray,
        "machine": machine(),
        "versions": package_versions(),
        "command": command,
    }
    (HERE / f"results-ray-sweep-{args.model}.json").write_text(json.dumps(result, indent=1))
    table = markdown(result, command)
    write_section(HERE / "RESULTS.md", f"ray-sweep-{args.model}", table, "benchmarks/ray_sweep_minilm.py")
    print(table)


if __name__ == "__main__":
    main()
