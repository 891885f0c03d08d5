"""edgec sweep MODEL --target T --prune 0,0.3,0.5 --precision fp32,int8 --eval FILE --out DIR"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgec.cli.common import command, numbers, stage_progress, stdout, table
from edgec.cli.options import (
    Calib,
    DataColumns,
    Eval,
    Force,
    ModelFolder,
    RayOptions,
    SourceLoading,
    Target,
    TimingBatch,
    TimingSeqLen,
)
from edgec.errors import ConfigError
from edgec.running.bench import BenchConfig
from edgec.sweep import sweep as run_sweep


def register(app: typer.Typer) -> None:
    command(app, "sweep", sweep)


def sweep(
    model: ModelFolder,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the artifacts, sweep.csv, sweep.md and sweep.png.")
    ],
    columns: DataColumns,
    loading: SourceLoading,
    ray: RayOptions,
    target: Target = "ort",
    prune: Annotated[str, typer.Option(help="Prune fractions, comma-separated (0: unpruned).")] = "0,0.3,0.5",
    precision: Annotated[str, typer.Option(help="Precisions, comma-separated.")] = "fp32,int8",
    calib: Calib = None,
    eval_data: Eval = None,
    batch: TimingBatch = 1,
    seq_len: TimingSeqLen = 128,
    threads: Annotated[int, typer.Option(help="Latency: intra-op threads.")] = 2,
    runs: Annotated[int, typer.Option(help="Latency: timed runs per artifact.")] = 100,
    force: Force = False,
) -> None:
    """Build every prune fraction x precision, measure metric, latency and size, and mark the Pareto front.

    With --ray every cell is a Ray task: builds in parallel, each timed alone on one node, a failed cell retried once
    and then reported in the table.
    """
    if min(batch, seq_len, threads, runs) < 1:
        raise ConfigError("--batch, --seq-len, --threads and --runs must be at least 1")
    with stage_progress() as on_stage:
        rows = run_sweep(
            model,
            target,
            fractions=numbers(prune, "--prune"),
            precisions=[p.strip() for p in precision.split(",") if p.strip()],
            calib=columns.read(calib),
            eval=columns.read(eval_data),
            out=out,
            bench=BenchConfig(batch=batch, seq_len=seq_len, threads=threads, warmup=10, runs=runs),
            force=force,
            load=loading.options,
            on_stage=on_stage,
            ray=ray.cluster(),
        )
    body = [
        [
            r["name"],
            f"{r['value']:.4g}",
            f"{r['drop']:.3g}",
            f"{r['latency_ms']:.2f}",
            f"{r['size_mb']:.1f}",
            "yes" if r["pareto"] else "",
        ]
        if not r["error"]
        else [r["name"], "", "", "", "", f"failed: {r['error']}"]
        for r in rows
    ]
    metric = next((r["metric"] for r in rows if not r["error"]), "metric")
    stdout.print(table(f"edgec sweep: {out}", ["artifact", metric, "drop", "latency ms", "size MB", "Pareto"], body))
    stdout.print(f"tables: {out / 'sweep.md'}, {out / 'sweep.csv'}; plot: {out / 'sweep.png'}")
