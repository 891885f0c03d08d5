"""Where the time goes, per operator type, for the ONNX rows benchmarks/run.py built (pruned ones included).

    python benchmarks/run.py --models mpnet --build-only      # first: builds the rows into benchmarks/work/run
    python benchmarks/profile_rows.py --models mpnet,minilm   # then: profiles them, writes RESULTS.md and results-profile.json

ONNX Runtime's profiler, batch 1, 2 intra-op threads, the artifact's own session settings otherwise; each row in a
fresh process. Kernel times are summed per operator type; the table puts the rows side by side, so what does not shrink
with the pruned units (per-layer fixed costs) shows as the operator types whose milliseconds stay put.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import WORK, machine, write_section  # noqa: E402

from edgec.artifacts.artifact import load_artifact  # noqa: E402
from edgec.running.bench import BenchConfig, profile_onnx  # noqa: E402
from edgec.running.profiling import Profile  # noqa: E402
from edgec.targets import SessionSettings  # noqa: E402

TOP = 12


def row_folders(name: str) -> dict[str, Path]:
    """The built rows of one model that are ONNX files, by run.py's label."""
    found = {}
    for record in sorted((WORK / name).glob("*/row.json")):
        path = json.loads(record.read_text()).get("path")
        if path:
            found[record.parent.name] = Path(path)
    return found


def profile_row(path: Path, config: BenchConfig, vocab: int) -> Profile:
    settings = load_artifact(path.parent).session if (path.parent / "edgec.json").exists() else SessionSettings()
    return profile_onnx(str(path), vocab, config, settings)


def markdown(name: str, profiles: dict[str, Profile], config: BenchConfig, command: str) -> str:
    operators = {}
    for profile in profiles.values():
        for o in profile.operators:
            operators[o.op_type] = operators.get(o.op_type, 0.0) + o.ms
    top = sorted(operators, key=lambda op: -operators[op])[:TOP]
    labels = list(profiles)
    lines = [
        f"## {name}: where the time goes (ONNX Runtime profiler, ms of kernel time per inference)",
        "",
        f"Machine: {machine()}. Command: `{command}`. Batch {config.batch}, {config.seq_len} tokens, "
        f"{config.threads} intra-op threads, {config.runs} profiled runs after {config.warmup} warm-up runs, each row in a fresh process. "
        "Profiling adds overhead: compare shares and rows, not these against the latency tables.",
        "",
        "| operator | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    for op in top:
        cells = []
        for label in labels:
            found = next((o for o in profiles[label].operators if o.op_type == op), None)
            cells.append(f"{found.ms:.2f} ({found.share:.0%}, {found.nodes})" if found else "")
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    lines.append("| **all kernels** | " + " | ".join(f"**{profiles[label].kernel_ms:.2f}**" for label in labels) + " |")
    lines += ["", "Cells: ms per inference (share of the row's kernel time, nodes of that type).", ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="minilm,mpnet")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    command = ("python benchmarks/profile_rows.py " + " ".join(sys.argv[1:])).strip()
    config = BenchConfig(batch=1, seq_len=args.seq_len, threads=2, warmup=10, runs=args.runs)
    results = {}
    for name in args.models.split(","):
        vocab = len(load_artifact(WORK / name / "edgec-int8" / "artifact").tokenizer())
        profiles = {label: profile_row(path, config, vocab) for label, path in row_folders(name).items()}
        results[name] = {label: p.to_dict() for label, p in profiles.items()}
        table = markdown(name, profiles, config, command)
        write_section(args.output, f"profile-{name}", table, script="benchmarks/profile_rows.py")
        print(table, flush=True)
    (HERE / "results-profile.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
