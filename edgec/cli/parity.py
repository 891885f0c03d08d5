"""edgec parity ARTIFACT --data FILE [--json]: re-check an artifact against its source model (CI use)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer

from edgec.api import check_parity
from edgec.artifact import load_artifact, verify_hashes
from edgec.cli.common import (
    LabelColumn, ScoreColumn, TextColumn, TextPairColumn, console, errors_to_exit_codes, read_optional, stdout, table,
)
from edgec.recipe import ParityThresholds
from edgec.report import LEDGER_COLUMNS, statistics_table


def register(app: typer.Typer) -> None:
    app.command("parity")(errors_to_exit_codes(parity))


def parity(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder written by `edgec build`.")],
    data: Annotated[Path, typer.Option(help="Eval data (.txt/.jsonl/.csv/.tsv).")],
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
    """Exit 0 when the artifact still matches the uncompressed model on DATA, 1 when it does not.

    A TensorRT artifact runs its engine where one was built and can run; elsewhere it is simulated on ONNX Runtime CPU.
    """
    loaded = load_artifact(artifact)
    changed = verify_hashes(loaded)
    dataset = read_optional(data, text_column, text_pair_column, label_column, score_column)
    overrides = ParityThresholds(min_cosine=min_cosine, max_drop=max_drop, min_agreement=min_agreement)
    row = check_parity(loaded, dataset, reference=reference, overrides=overrides)
    if as_json:
        print(json.dumps({**dataclasses.asdict(row), "passed": row.passed, "changed_files": changed}, indent=2))
    else:
        if changed:
            console.print(f"[yellow]warning:[/] files changed since the build: {', '.join(changed)}")
        columns = [c for c in LEDGER_COLUMNS if c in row.metrics]
        rows = [[c, f"{row.metrics[c]:.6g}"] for c in columns]
        stdout.print(table(f"parity of {artifact} on {data} ({len(dataset)} examples)", ["metric", "value"], rows))
        stats_header, stats_rows = statistics_table(row.metrics)
        if stats_rows:
            stdout.print(table("error statistics per output", stats_header, stats_rows))
        if row.simulated:
            stdout.print(f"simulated: ONNX Runtime CPU ran the model in the engine's place ({row.model}); "
                         "run this where the engine was built for the engine's own figures")
        stdout.print("PASS" if row.passed else "FAIL: " + "; ".join(row.failures))
    if not row.passed:
        raise typer.Exit(1)
