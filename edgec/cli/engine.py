"""edgec engine ARTIFACT [--data FILE]: build a TensorRT artifact's engine on the GPU, gate it on parity, record it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgec.artifacts.artifact import load_artifact
from edgec.artifacts.report import LEDGER_COLUMNS
from edgec.backends.tensorrt import build_checked_engine
from edgec.cli.common import command, stdout, table
from edgec.cli.options import DataColumns, Reference


def register(app: typer.Typer) -> None:
    command(app, "engine", engine)


def engine(
    artifact: Annotated[
        Path, typer.Argument(help="Artifact folder written by `edgec build --target trt-int8|trt-fp16`.")
    ],
    columns: DataColumns,
    data: Annotated[
        Path | None,
        typer.Option(
            help="Eval data the engine's parity is checked on against the source model; default: the artifact's golden sample.",
        ),
    ] = None,
    reference: Reference = None,
) -> None:
    """Build the TensorRT engine of an artifact here (needs tensorrt and an NVIDIA GPU), check its parity against the
    uncompressed model on DATA, and record it in the manifest. Exit 1 on failure (kept as model.engine.rejected)."""
    dataset = columns.read(data)
    built, row = build_checked_engine(load_artifact(artifact), dataset, reference=reference)
    rows = [[k, str(v)] for k, v in built.items() if k != "parity"]
    rows += [[f"parity: {c}", f"{row.metrics[c]:.6g}"] for c in LEDGER_COLUMNS if c in row.metrics]
    stdout.print(
        table(f"TensorRT engine for {artifact} (parity on {data or 'its golden sample'}: PASS)", ["", ""], rows)
    )
