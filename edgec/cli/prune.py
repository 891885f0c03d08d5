"""edgec prune MODEL --prune F --calib FILE [--distill FILE] --out DIR: a smaller Hugging Face folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgec.api import compress
from edgec.artifacts.report import distillation_row, format_ledger, pruning_rows
from edgec.cli.build_options import Distillation, Pruning
from edgec.cli.common import command, stage_progress, stdout, table
from edgec.cli.options import Calib, DataColumns, Eval, Force, MaxLength, ModelFolder, SourceLoading, Task
from edgec.processes import state as process_state
from edgec.recipe import PruneConfig, Recipe


def register(app: typer.Typer) -> None:
    command(app, "prune", prune)


def prune(
    model: ModelFolder,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the pruned model (save_pretrained layout).")],
    pruning: Pruning,
    distillation: Distillation,
    columns: DataColumns,
    loading: SourceLoading,
    calib: Calib = None,
    calib_samples: Annotated[
        int | None,
        typer.Option(
            help=f"Calibration texts drawn deterministically [default: {PruneConfig.__dataclass_fields__['calib_samples'].default}].",
            show_default=False,
        ),
    ] = None,
    eval_data: Eval = None,
    task: Task = None,
    max_length: MaxLength = 512,
    force: Force = False,
) -> None:
    """Prune (and distill) a model into a smaller Hugging Face folder that transformers' AutoModel loads; no export.

    The build's prune and distill stages alone (`api.compress`): heads, FFN neurons, whole layers or hidden width
    removed under a compute budget, checked against the unpruned model in PyTorch.
    """
    recipe = Recipe(
        task=task,
        prune=pruning.config(calib_samples=calib_samples),
        distill=distillation.config(),
        max_length=max_length,
    )
    with stage_progress() as on_stage:
        summary = compress(
            model,
            recipe,
            calib=columns.read(calib),
            eval=columns.read(eval_data),
            train=columns.read(distillation.distill),
            out=out,
            force=force,
            load=loading.options,
            on_stage=on_stage,
        )
    if not process_state().is_main_process:  # under torchrun (distillation on several processes), one summary
        return
    rows = pruning_rows(summary.prune) + ([distillation_row(summary.distill)] if summary.distill else [])
    stdout.print(table(f"edgec prune: {out}", ["", ""], [list(r) for r in rows]))
    stdout.print(
        table("parity vs the unpruned model (PyTorch)", *format_ledger(summary.ledger, summary.reference_metric))
    )
