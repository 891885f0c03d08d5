"""edgec parity ARTIFACT [--data FILE] [--json]: re-check an artifact, alone (its golden sample) or against its source model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer

from edgec.artifact_ops import check_parity
from edgec.artifact import load_artifact
from edgec.cli.common import (
    LabelColumn, ScoreColumn, TextColumn, TextPairColumn, errors_to_exit_codes, read_optional, stdout, table,
)
from edgec.parity.integrity import integrity_failures
from edgec.parity.ledger import ParityRow
from edgec.recipe import ParityThresholds
from edgec.report import LEDGER_COLUMNS, statistics_table


def register(app: typer.Typer) -> None:
    app.command("parity")(errors_to_exit_codes(parity))


def parity(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder (or .zip bundle) written by `edgec build`.")],
    data: Annotated[Path | None, typer.Option(
        help="Eval data (.txt/.jsonl/.csv/.tsv) to measure against the source model; without it, the artifact's own golden sample.",
    )] = None,
    samples: Annotated[int | None, typer.Option(help="Measure a deterministic sample of this many --data examples.")] = None,
    reference: Annotated[Path | None, typer.Option(help="The uncompressed model, if not at the path the build recorded.")] = None,
    max_drop: Annotated[float | None, typer.Option(help="Override: max task-metric points lost.")] = None,
    min_cosine: Annotated[float | None, typer.Option(help="Override: min mean cosine to the reference.")] = None,
    min_agreement: Annotated[float | None, typer.Option(help="Override: min top-1 agreement.")] = None,
    text_column: TextColumn = None,
    text_pair_column: TextPairColumn = None,
    label_column: LabelColumn = None,
    score_column: ScoreColumn = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Exit 0 when the artifact still matches, 1 when it does not (or its files changed since the build).

    Without --data it needs neither the source model nor a network: the artifact's golden sample (texts and the
    outputs stored at build time) is run through its own tokenizer and model. With --data it is measured against the
    source model. A TensorRT artifact runs its engine where one was built and can run; elsewhere it is simulated.
    """
    loaded = load_artifact(artifact)
    broken = integrity_failures(loaded)
    dataset = read_optional(data, text_column, text_pair_column, label_column, score_column, sample=samples)
    overrides = ParityThresholds(min_cosine=min_cosine, max_drop=max_drop, min_agreement=min_agreement)
    rows = check_parity(loaded, dataset, reference=reference, overrides=overrides)
    problems = broken + [f for r in rows for f in r.failures]
    if as_json:
        report = {"passed": not problems, "failures": problems,
                  "data": str(data) if data else "golden sample", "rows": [dataclasses.asdict(r) for r in rows]}
        print(json.dumps(report, indent=2))
    else:
        print_rows(rows, f"parity of {artifact} on {data} ({len(dataset)} examples)" if dataset else
                   f"parity of {artifact} on its golden sample (no source model)")
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
    if any(r.simulated for r in rows):
        stdout.print(f"simulated: ONNX Runtime CPU ran the model in the engine's place ({rows[0].model}); "
                     "run this where the engine was built for the engine's own figures")
