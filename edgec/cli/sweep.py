"""edgec sweep MODEL --target T --prune 0,0.3,0.5 --precision fp32,int8 --eval FILE --out DIR"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgec.bench import BenchConfig
from edgec.cli.common import (
    AllowPickle, Force, LabelColumn, RayAddress, ScoreColumn, TextColumn, TextPairColumn, TrustRemoteCode, UseRay, errors_to_exit_codes,
    numbers, ray_cluster, read_optional, stage_progress, stdout, table,
)
from edgec.errors import ConfigError
from edgec.source import LoadOptions
from edgec.sweep import sweep as run_sweep


def register(app: typer.Typer) -> None:
    app.command("sweep")(errors_to_exit_codes(sweep))


def sweep(
    model: Annotated[str, typer.Argument(help="Hugging Face model folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the artifacts, sweep.csv, sweep.md and sweep.png.")],
    target: Annotated[str, typer.Option(help="Profile name, `ort` for this CPU, or a .toml path.")] = "ort",
    prune: Annotated[str, typer.Option(help="Prune fractions, comma-separated (0: unpruned).")] = "0,0.3,0.5",
    precision: Annotated[str, typer.Option(help="Precisions, comma-separated.")] = "fp32,int8",
    calib: Annotated[Path | None, typer.Option(help="Calibration data (pruning importance and int8 ranges).")] = None,
    eval_data: Annotated[Path | None, typer.Option("--eval", help="Eval data the metric is measured on.")] = None,
    batch: Annotated[int, typer.Option(help="Latency: batch size.")] = 1,
    seq_len: Annotated[int, typer.Option(help="Latency: tokens per input.")] = 128,
    threads: Annotated[int, typer.Option(help="Latency: intra-op threads.")] = 2,
    runs: Annotated[int, typer.Option(help="Latency: timed runs per artifact.")] = 100,
    text_column: TextColumn = None,
    text_pair_column: TextPairColumn = None,
    label_column: LabelColumn = None,
    score_column: ScoreColumn = None,
    force: Force = False,
    trust_remote_code: TrustRemoteCode = False,
    allow_pickle: AllowPickle = False,
    use_ray: UseRay = False,
    ray_address: RayAddress = None,
) -> None:
    """Build every prune fraction x precision, measure metric, latency and size, and mark the Pareto front.

    With --ray every cell is a Ray task: builds in parallel, each timed alone on one node, a failed cell retried once
    and then reported in the table.
    """
    if min(batch, seq_len, threads, runs) < 1:
        raise ConfigError("--batch, --seq-len, --threads and --runs must be at least 1")
    columns = (text_column, text_pair_column, label_column, score_column)
    with stage_progress() as on_stage:
        rows = run_sweep(
            model, target, fractions=numbers(prune, "--prune"), precisions=[p.strip() for p in precision.split(",") if p.strip()],
            calib=read_optional(calib, *columns), eval=read_optional(eval_data, *columns), out=out,
            bench=BenchConfig(batch=batch, seq_len=seq_len, threads=threads, warmup=10, runs=runs), force=force,
            load=LoadOptions(trust_remote_code=trust_remote_code, allow_pickle=allow_pickle), on_stage=on_stage,
            ray=ray_cluster(use_ray, ray_address),
        )
    body = [[r["name"], f"{r['value']:.4g}", f"{r['drop']:.3g}", f"{r['latency_ms']:.2f}", f"{r['size_mb']:.1f}", "yes" if r["pareto"] else ""]
            if not r["error"] else [r["name"], "", "", "", "", f"failed: {r['error']}"] for r in rows]
    metric = next((r["metric"] for r in rows if not r["error"]), "metric")
    stdout.print(table(f"edgec sweep: {out}", ["artifact", metric, "drop", "latency ms", "size MB", "Pareto"], body))
    stdout.print(f"tables: {out / 'sweep.md'}, {out / 'sweep.csv'}; plot: {out / 'sweep.png'}")
