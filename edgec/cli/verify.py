"""edgec verify ARTIFACT --emulate aarch64 --data FILE [--samples 200] [--runner]: run an artifact (or its predict.py)
on an emulated ARM64 runtime."""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from typing import Annotated

import typer

from edgec.artifacts.artifact import load_artifact
from edgec.artifacts.artifact_ops import verify_emulated
from edgec.artifacts.report import LEDGER_COLUMNS, statistics_table
from edgec.cli.common import command, stdout, table
from edgec.cli.options import ArtifactPath, AsJson, DataColumns, Reference, Thresholds
from edgec.errors import ConfigError
from edgec.running.device_check import check_runner_emulated

EMULATED = ("aarch64",)


def register(app: typer.Typer) -> None:
    command(app, "verify", verify)


def verify(
    artifact: ArtifactPath,
    data: Annotated[Path, typer.Option(help="Eval data (.txt/.jsonl/.csv/.tsv).")],
    thresholds: Thresholds,
    columns: DataColumns,
    emulate: Annotated[
        str, typer.Option(help="Architecture to run the artifact on under emulation: aarch64.")
    ] = "aarch64",
    samples: Annotated[
        int, typer.Option(help="Examples drawn from --data (emulation runs 100-500x slower than native).")
    ] = 200,
    threads: Annotated[int, typer.Option(help="Intra-op threads of the emulated ONNX Runtime.")] = 1,
    reference: Reference = None,
    as_json: AsJson = False,
    runner: Annotated[
        bool,
        typer.Option(
            "--runner",
            help="Instead: run the artifact's predict.py (onnxruntime, tokenizers, numpy only) there and here; compare.",
        ),
    ] = False,
) -> None:
    """Run an artifact on emulated ARM64 (aarch64 ONNX Runtime under qemu): exit 0 when it matches the uncompressed
    model there, 1 when not. `edgec parity` checks it on this machine.

    The first run builds the emulated runtime (scripts/setup_arm64.sh: qemu-user-static, an arm64 Python and
    onnxruntime's aarch64 wheel, about 200 MB in ~/.cache/edgec/arm64).
    """
    if emulate not in EMULATED:
        raise ConfigError(f"--emulate {emulate!r} is not supported; use one of {', '.join(EMULATED)}")
    if samples < 1 or threads < 1:
        raise ConfigError("--samples and --threads must be at least 1")
    dataset = columns.read(data)
    if runner:
        return _verify_runner(artifact, dataset, samples, as_json)
    row, run = verify_emulated(
        load_artifact(artifact),
        dataset,
        samples=samples,
        threads=threads,
        reference=reference,
        overrides=thresholds.overrides,
    )
    examples = min(samples, len(dataset))
    latency = {
        "per_batch_median_ms": statistics.median(run.latency_ms),
        "per_example_ms": sum(run.latency_ms) / examples,
        "batches": len(run.latency_ms),
        "note": "emulated: not a device figure",
    }
    if as_json:
        print(
            json.dumps(
                {
                    **dataclasses.asdict(row),
                    "passed": row.passed,
                    "runtime": run.runtime,
                    "examples": examples,
                    "emulated_latency": latency,
                },
                indent=2,
            )
        )
    else:
        rows = [[c, f"{row.metrics[c]:.6g}"] for c in LEDGER_COLUMNS if c in row.metrics]
        stdout.print(table(f"{artifact} on {run.runtime}, {examples} examples of {data}", ["metric", "value"], rows))
        stdout.print(table("error statistics per output", *statistics_table(row.metrics)))
        stdout.print(
            f"emulated latency (NOT a device figure; qemu runs 100-500x slower): median {latency['per_batch_median_ms']:.0f} ms "
            f"per batch, {latency['per_example_ms']:.0f} ms per example over {latency['batches']} batches"
        )
        stdout.print("PASS" if row.passed else "FAIL: " + "; ".join(row.failures))
    if not row.passed:
        raise typer.Exit(1)


def _verify_runner(artifact: Path, dataset, samples: int, as_json: bool) -> None:
    """--runner: the device runner on emulated aarch64 against the same runner here (issue 18)."""
    row = check_runner_emulated(load_artifact(artifact), dataset, samples=samples)
    if as_json:
        print(json.dumps({**dataclasses.asdict(row), "passed": row.passed}, indent=2))
    else:
        rows = [[c, f"{row.metrics[c]:.6g}"] for c in LEDGER_COLUMNS if c in row.metrics]
        stdout.print(
            table(f"{row.stage}: {artifact}, {min(samples, len(dataset))} examples", ["metric", "value"], rows)
        )
        stdout.print("PASS" if row.passed else "FAIL: " + "; ".join(row.failures))
    if not row.passed:
        raise typer.Exit(1)
