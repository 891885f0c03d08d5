"""edgec parity ARTIFACT [--data FILE] [--json]: re-check an artifact, alone (its golden sample) or against its source model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer

from edgec.artifacts.artifact import load_artifact
from edgec.artifacts.artifact_ops import check_parity
from edgec.artifacts.report import LEDGER_COLUMNS, comparison_note, statistics_table
from edgec.cli.common import command, stdout, table
from edgec.cli.options import ArtifactPath, AsJson, DataColumns, Reference, Thresholds
from edgec.parity.integrity import integrity_failures
from edgec.parity.ledger import ParityRow


def register(app: typer.Typer) -> None:
    command(app, "parity", parity)


def parity(
    artifact: ArtifactPath,
    thresholds: Thresholds,
    columns: DataColumns,
    data: Annotated[
        Path | None,
        typer.Option(
            help="Eval data (.txt/.jsonl/.csv/.tsv) to measure against the source model; without it, the artifact's own golden sample.",
        ),
    ] = None,
    samples: Annotated[
        int | None, typer.Option(help="Measure a deterministic sample of this many --data examples.")
    ] = None,
    reference: Reference = None,
    as_json: AsJson = False,
) -> None:
    """Re-check an artifact's parity on this machine: exit 0 when it still matches, 1 when not (or its files changed).

    Without --data it needs neither the source model nor a network: the artifact's golden sample (texts and the
    outputs stored at build time) is run through its own tokenizer and model. With --data it is measured against the
    source model. A TensorRT artifact runs its engine where one was built and can run; elsewhere it is simulated.
    """
    loaded = load_artifact(artifact)
    broken = integrity_failures(loaded)
    dataset = columns.read(data, sample=samples)
    rows = check_parity(loaded, dataset, reference=reference, overrides=thresholds.overrides)
    problems = broken + [f for r in rows for f in r.failures]
    if as_json:
        report = {
            "passed": not problems,
            "failures": problems,
            "data": str(data) if data else "golden sample",
            "rows": [dataclasses.asdict(r) for r in rows],
        }
        print(json.dumps(report, indent=2))
    else:
        print_rows(
            rows,
            f"parity of {artifact} on {data} ({len(dataset)} examples)"
            if dataset
            else f"parity of {artifact} on its golden sample (no source model)",
        )
        stdout.print("PASS" if not problems else "FAIL: " + "; ".join(problems))
    if problems:
        raise typer.Exit(1)


def print_rows(rows: list[ParityRow], title: str) -> None:
    columns = [c for c in LEDGER_COLUMNS if any(c in r.metrics for r in rows)]
    body = [[c, *(f"{r.metrics[c]:.6g}" if c in r.metrics else "" for r in rows)] for c in columns]
    stdout.print(table(title, ["metric", *(r.stage for r in rows)], body))
    for row in rows:
        stats_header, stats_rows = statistics_table(row.metrics)
        if stats_rows:
            stdout.print(table(f"error statistics per output ({row.stage})", stats_header, stats_rows))
    if note := comparison_note(rows):
        stdout.print(note, markup=False)
    if any(r.simulated for r in rows):
        stdout.print(
            f"simulated: ONNX Runtime CPU ran the model in the engine's place ({rows[0].model}); "
            "run this where the engine was built for the engine's own figures"
        )
