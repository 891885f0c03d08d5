"""Session settings measured, not guessed: edgec's tuner (what `edgec bench --tune` runs) on the int8 rows of run.py.

    python benchmarks/run.py --models minilm,mpnet --build-only   # first: the artifacts
    python benchmarks/tune_sessions.py --models minilm,mpnet      # then: RESULTS.md section and results-session-tuning.json

Each knob's values are measured in interleaved rounds, each in a fresh process (batch 1, 128 tokens); a value replaces
the current one only when its fastest round's p50 is at least 3% faster. The profile's [session] defaults are what this
measures against.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import WORK, machine, write_section  # noqa: E402

from edgec.artifacts.artifact import load_artifact  # noqa: E402
from edgec.running.bench import BenchConfig  # noqa: E402
from edgec.running.tuning import onnx_latency, tune_session  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="minilm,mpnet")
    parser.add_argument(
        "--rows", default="edgec-int8", help="run.py row folders to tune (e.g. edgec-int8,pruned-0.85-x1)."
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    command = ("python benchmarks/tune_sessions.py " + " ".join(sys.argv[1:])).strip()
    config = BenchConfig(batch=1, seq_len=128, threads=None, warmup=10, runs=args.runs)
    results, lines = [], []
    for name in args.models.split(","):
        for row in args.rows.split(","):
            artifact = load_artifact(WORK / name / row / "artifact")
            measure = onnx_latency(str(artifact.model_path), len(artifact.tokenizer()), config)
            chosen, trials = tune_session(measure, artifact.session, rounds=args.rounds)
            results.append(
                {
                    "model": name,
                    "row": row,
                    "start": asdict(artifact.session),
                    "chosen": asdict(chosen),
                    "trials": [{"knob": t.knob, "value": t.value, "p50_ms": t.p50_ms} for t in trials],
                }
            )
            for t in trials:
                kept = getattr(chosen, t.knob) == t.value
                lines.append(
                    f"| {name} | {row} | {t.knob} | {t.value} | {t.fastest_ms:.2f} | "
                    f"{' / '.join(f'{ms:.2f}' for ms in t.p50_ms)} | {'chosen' if kept else ''} |"
                )
    table = (
        "\n".join(
            [
                "## Session settings, measured (edgec.running.tuning, as `edgec bench --tune` runs it)",
                "",
                f"Machine: {machine()}. Command: `{command}`. Batch 1, 128 tokens, {args.runs} runs per measurement, "
                f"{args.rounds} interleaved rounds, each in a fresh process; knobs tuned in this order, each starting from the "
                "winners before it (intra_op_threads 0 = every core counts as the core count).",
                "",
                "| model | row | setting | value | fastest round's p50 ms | p50 per round | |",
                "|---|---|---|---|---|---|---|",
                *lines,
            ]
        )
        + "\n"
    )
    write_section(args.output, "session-tuning", table, script="benchmarks/tune_sessions.py")
    (HERE / "results-session-tuning.json").write_text(json.dumps(results, indent=1))
    print(table, flush=True)


if __name__ == "__main__":
    main()
