"""edgec prune MODEL --prune F --calib FILE [--distill FILE] --out DIR: a smaller Hugging Face folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgec.api import compress
from edgec.cli.common import (
    AllowPickle, Distill, DistillBatchSize, DistillLr, DistillMinutes, DistillSteps, Force, LabelColumn, Prune,
    PruneHiddenSize, PruneRescale, PruneSchedule, PruneUnits, ScoreColumn, TextColumn, TextPairColumn,
    TrustRemoteCode, errors_to_exit_codes, front_end, read_optional, stage_progress, stdout, table,
)
from edgec.processes import state as process_state
from edgec.recipe import PruneConfig, Recipe
from edgec.report import distillation_row, format_ledger, pruning_rows
from edgec.source import LoadOptions


def register(app: typer.Typer) -> None:
    app.command("prune")(errors_to_exit_codes(prune))


def prune(
    model: Annotated[str, typer.Argument(help="Hugging Face model folder (or a repo id already in the local HF cache).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the pruned model (save_pretrained layout).")],
    prune: Prune = None,
    prune_units: PruneUnits = "heads,ffn",
    prune_hidden_size: PruneHiddenSize = None,
    prune_rescale: PruneRescale = True,
    schedule: PruneSchedule = "one-shot",
    calib: Annotated[Path | None, typer.Option(help="Calibration text for importance and rescaling; default: edgec's corpus.")] = None,
    calib_samples: Annotated[int | None, typer.Option(help=f"Calibration texts drawn deterministically [default: {PruneConfig.__dataclass_fields__['calib_samples'].default}].", show_default=False)] = None,
    eval_data: Annotated[Path | None, typer.Option("--eval", help="Eval data for the ledger and distillation's early stop.")] = None,
    distill: Distill = None,
    distill_steps: DistillSteps = 1000,
    distill_minutes: DistillMinutes = None,
    distill_batch_size: DistillBatchSize = 32,
    distill_lr: DistillLr = 1e-4,
    task: Annotated[str | None, typer.Option(help="Override the task detected from config.json.")] = None,
    max_length: Annotated[int, typer.Option(help="Longest tokenized input; longer texts are truncated.")] = 512,
    text_column: TextColumn = None,
    text_pair_column: TextPairColumn = None,
    label_column: LabelColumn = None,
    score_column: ScoreColumn = None,
    force: Force = False,
    trust_remote_code: TrustRemoteCode = False,
    allow_pickle: AllowPickle = False,
) -> None:
    """Remove heads, FFN neurons and whole layers (and distill), writing a folder transformers' AutoModel loads."""
    prune_config, distill_config = front_end(
        prune, prune_units, prune_hidden_size, prune_rescale, schedule, distill, distill_steps, distill_minutes,
        distill_batch_size, distill_lr, prune_samples=calib_samples,
    )
    recipe = Recipe(task=task, prune=prune_config, distill=distill_config, max_length=max_length)
    columns = (text_column, text_pair_column, label_column, score_column)
    with stage_progress() as on_stage:
        summary = compress(
            model, recipe, calib=read_optional(calib, *columns), eval=read_optional(eval_data, *columns),
            train=read_optional(distill, *columns), out=out, force=force,
            load=LoadOptions(trust_remote_code=trust_remote_code, allow_pickle=allow_pickle), on_stage=on_stage,
        )
    if not process_state().is_main_process:  # under torchrun (distillation on several processes), one summary
        return
    rows = pruning_rows(summary) + ([distillation_row(summary["distill"])] if summary["distill"] else [])
    stdout.print(table(f"edgec prune: {out}", ["", ""], [list(r) for r in rows]))
    stdout.print(table("parity vs the unpruned model (PyTorch)", *format_ledger(summary["ledger"], summary["reference_metric"])))
