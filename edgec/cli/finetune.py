"""edgec finetune MODEL --data train.jsonl --eval dev.jsonl --task T --minutes M --out DIR"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgec.cli.common import command, stage_progress, stdout, table
from edgec.cli.options import DataColumns, Force, ModelFolder, SourceLoading
from edgec.compression.finetune import FINETUNE_TASKS
from edgec.compression.finetune import finetune as run_finetune
from edgec.processes import state as process_state
from edgec.recipe import TrainConfig

UNLIMITED_STEPS = 10**9


def register(app: typer.Typer) -> None:
    command(app, "finetune", finetune)


def finetune(
    model: ModelFolder,
    data: Annotated[
        Path, typer.Option(help="Labelled training data (.jsonl/.csv/.tsv): label per text, or text_pair + score.")
    ],
    eval_data: Annotated[Path, typer.Option("--eval", help="Labelled eval data; the best checkpoint on it is kept.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the fine-tuned model.")],
    columns: DataColumns,
    loading: SourceLoading,
    task: Annotated[
        str, typer.Option(help=f"{' or '.join(FINETUNE_TASKS)} (sentence-pair similarity).")
    ] = "sequence-classification",
    minutes: Annotated[float | None, typer.Option(help="Wall-clock budget.")] = None,
    steps: Annotated[
        int | None, typer.Option(help="Most optimizer steps (default 1000; no limit when --minutes is given).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Examples per micro-batch.")] = 32,
    accumulation: Annotated[int, typer.Option(help="Micro-batches per optimizer step.")] = 1,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW).")] = 5e-5,
    warmup: Annotated[float, typer.Option(help="Share of the budget spent warming up.")] = 0.06,
    schedule: Annotated[str, typer.Option(help="Decay after warmup: linear or cosine.")] = "linear",
    precision: Annotated[
        str,
        typer.Option(
            help="Autocast: auto (bf16 where the CPU/GPU computes it natively, else fp32), bf16, fp16 (GPU, loss scaling) or fp32.",
        ),
    ] = "auto",
    eval_every: Annotated[int, typer.Option(help="Optimizer steps between evaluations.")] = 100,
    patience: Annotated[int, typer.Option(help="Evaluations without improvement before stopping.")] = 5,
    max_length: Annotated[int, typer.Option(help="Longest tokenized training text.")] = 128,
    force: Force = False,
) -> None:
    """Fine-tune a pretrained model on labelled data, keeping the checkpoint that scores best on --eval.

    Several CPU processes (data parallel, gloo): torchrun --nproc_per_node 2 -m edgec finetune ... (see README).
    """
    if steps is None:  # a wall-clock budget alone should not be cut short by a default step count
        steps = UNLIMITED_STEPS if minutes is not None else 1000
    config = TrainConfig(
        steps=steps,
        minutes=minutes,
        batch_size=batch_size,
        accumulation=accumulation,
        learning_rate=lr,
        warmup=warmup,
        schedule=schedule,
        precision=precision,
        eval_every=eval_every,
        patience=patience,
        max_length=max_length,
    )
    with stage_progress() as on_stage:
        on_stage("finetune")
        record = run_finetune(
            model,
            task=task,
            train_data=columns.read(data),
            eval_data=columns.read(eval_data),
            config=config,
            out=out,
            force=force,
            load=loading.options,
        )
    rows = [
        [
            "task / metric",
            f"{record['task']} / {record['metric']} on {record['eval_data']} ({record['eval_examples']} examples)",
        ],
        [
            "score",
            f"{record['start_score']:.2f} at the start -> {record['best_score']:.2f} (best, step {record['best_step']})",
        ],
        [
            "training",
            f"{record['steps']} steps in {record['seconds']:.0f} s on {record['train_examples']} examples, stopped by {record['stopped']}",
        ],
        ["precision", record["precision_reason"]],
        ["processes", ", ".join(f"rank {r['rank']}: {r['micro_batches']} micro-batches" for r in record["ranks"])],
        ["saved", f"{out} (the best checkpoint; run record in edgec_finetune.json)"],
    ]
    if process_state().is_main_process:  # under torchrun, one summary
        stdout.print(table(f"edgec finetune: {model}", ["", ""], rows))
