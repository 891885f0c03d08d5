"""edgec build MODEL --target T --precision P --calib FILE --eval FILE --out DIR"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from edgec.api import build as build_artifact
from edgec.bench import BenchConfig
from edgec.cli.common import (
    AllowPickle, Distill, DistillBatchSize, DistillLr, DistillMinutes, DistillSteps, Force, LabelColumn, Prune,
    PruneHiddenSize, PruneRescale, PruneSchedule, PruneUnits, RayAddress, ScoreColumn, TextColumn, TextPairColumn,
    TrustRemoteCode, UseRay, errors_to_exit_codes, front_end, numbers, ray_cluster, read_optional, stage_progress, stdout, table,
)
from edgec.errors import BudgetError, ConfigError, ParityError
from edgec.parity.evalset import selection_split
from edgec.recipe import ParityThresholds, QuantConfig, Recipe
from edgec.report import ledger_table, summary_rows
from edgec.search import Budgets, search, unmet_message
from edgec.source import LoadOptions


def register(app: typer.Typer) -> None:
    app.command("build")(errors_to_exit_codes(build))


def build(
    model: Annotated[str, typer.Argument(help="Hugging Face model folder (or a repo id already in the local HF cache).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Artifact folder to write.")],
    target: Annotated[str, typer.Option(
        help="Profile name (see `edgec targets`), `ort` for this CPU, `trt` (int8 with --calib, else fp16), or a .toml path.",
    )] = "ort",
    precision: Annotated[str | None, typer.Option(help="fp32, fp16, int8-dynamic or int8 (default: the target's).")] = None,
    calib: Annotated[Path | None, typer.Option(help="Calibration data (.txt/.jsonl/.csv/.tsv); default: edgec's corpus.")] = None,
    eval_data: Annotated[Path | None, typer.Option("--eval", help="Eval data for parity (default: the calibration set).")] = None,
    eval_samples: Annotated[int | None, typer.Option(help="Use a deterministic sample of this many --eval examples.")] = None,
    task: Annotated[str | None, typer.Option(help="Override the task detected from config.json.")] = None,
    calib_samples: Annotated[int, typer.Option(help="Calibration texts drawn deterministically.")] = 256,
    calibration: Annotated[str, typer.Option(help="Activation ranges: minmax, percentile or entropy.")] = "percentile",
    percentile: Annotated[float, typer.Option(help="Percentile kept by --calibration percentile.")] = 99.999,
    fallback: Annotated[bool, typer.Option(help="Keep the most sensitive int8 nodes in float when parity fails.")] = True,
    max_drop: Annotated[float | None, typer.Option(help="Max task-metric points lost (Spearman x100 / accuracy %).")] = None,
    min_cosine: Annotated[float | None, typer.Option(help="Min mean cosine to the reference embeddings.")] = None,
    min_agreement: Annotated[float | None, typer.Option(help="Min share of top-1 predictions equal to the reference.")] = None,
    max_length: Annotated[int, typer.Option(help="Longest tokenized input; longer texts are truncated.")] = 512,
    prune: Prune = None,
    prune_units: PruneUnits = "heads,ffn",
    prune_hidden_size: PruneHiddenSize = None,
    prune_rescale: PruneRescale = True,
    schedule: PruneSchedule = "one-shot",
    distill: Distill = None,
    distill_steps: DistillSteps = 1000,
    distill_minutes: DistillMinutes = None,
    distill_batch_size: DistillBatchSize = 32,
    distill_lr: DistillLr = 1e-4,
    text_column: TextColumn = None,
    text_pair_column: TextPairColumn = None,
    label_column: LabelColumn = None,
    score_column: ScoreColumn = None,
    max_batch: Annotated[int | None, typer.Option(help="TensorRT: largest batch the engine accepts (profile default 32).")] = None,
    max_seq_len: Annotated[int | None, typer.Option(help="TensorRT: longest sequence the engine accepts; also truncates inputs.")] = None,
    require_engine: Annotated[bool, typer.Option("--require-engine", help="TensorRT: fail unless the engine is built here.")] = False,
    instruction_set: Annotated[str | None, typer.Option(
        help="CPU instruction set the artifact is for (avx2, avx512-vnni, amx, arm-dotprod ...); default: this machine's.",
    )] = None,
    accelerator: Annotated[str | None, typer.Option(help="Mobile: shape the graph for coreml, nnapi or xnnpack (fp32).")] = None,
    fixed_shape: Annotated[str | None, typer.Option(help="Mobile: the graph's fixed input shape BxS, e.g. 1x128 (default with --accelerator).")] = None,
    max_latency_ms: Annotated[float | None, typer.Option(help="Search: p50 latency budget on this machine (see --seq-len).")] = None,
    max_size_mb: Annotated[float | None, typer.Option(help="Search: model file size budget.")] = None,
    search_prune: Annotated[str, typer.Option(help="Search: prune fractions tried.")] = "0,0.2,0.3,0.4,0.5,0.6,0.7",
    search_samples: Annotated[int, typer.Option(help="Search: eval examples candidates are measured on.")] = 200,
    seq_len: Annotated[int, typer.Option(help="Search: tokens per input when timing.")] = 128,
    batch: Annotated[int, typer.Option(help="Search: batch size when timing.")] = 1,
    use_ray: UseRay = False,  # issue 18: the budgeted search's candidates as Ray tasks
    ray_address: RayAddress = None,
    force: Force = False,
    trust_remote_code: TrustRemoteCode = False,
    allow_pickle: AllowPickle = False,
) -> None:
    """Compile a model for a target and verify it against the uncompressed model."""
    prune_config, distill_config = front_end(
        prune, prune_units, prune_hidden_size, prune_rescale, schedule, distill, distill_steps, distill_minutes,
        distill_batch_size, distill_lr,
    )
    recipe = Recipe(
        task=task,
        prune=prune_config,
        distill=distill_config,
        quant=QuantConfig(precision=precision, calibration=calibration, percentile=percentile, calib_samples=calib_samples, fallback=fallback),
        parity=ParityThresholds(min_cosine=min_cosine, max_drop=max_drop, min_agreement=min_agreement),
        max_length=max_length,
    )
    tensorrt = {k: v for k, v in [("max_batch", max_batch), ("max_seq_len", max_seq_len)] if v is not None}
    tensorrt |= {"require_engine": True} if require_engine else {}
    mobile = mobile_settings(accelerator, fixed_shape)  # issue 18
    columns = (text_column, text_pair_column, label_column, score_column)
    # A sample is drawn while reading (one streaming pass), so calibration and eval files may exceed memory.
    calib_set = read_optional(calib, *columns, sample=calib_samples)
    eval_set = read_optional(eval_data, *columns, sample=eval_samples)
    train_set = read_optional(distill, *columns)
    load = LoadOptions(trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    if max_latency_ms is not None or max_size_mb is not None:
        budgets = Budgets(max_drop=max_drop, max_latency_ms=max_latency_ms, max_size_mb=max_size_mb)
        bench = BenchConfig(batch=batch, seq_len=seq_len, threads=os.cpu_count() or 1, warmup=10, runs=100)
        fractions = tuple(numbers(search_prune, "--search-prune"))
        return search_build(model, target, budgets, recipe, calib_set, eval_set, train_set, out, bench, fractions, search_samples, force, load,
                            ray_cluster(use_ray, ray_address))
    if use_ray or ray_address:
        raise ConfigError("--ray runs the budgeted search's candidates; pass --max-latency-ms or --max-size-mb, or use `edgec sweep --ray`")
    with stage_progress() as on_stage:
        try:
            build_artifact(
                model, target, recipe=recipe, calib=calib_set, eval=eval_set, train=train_set, out=out, force=force,
                load=load, tensorrt=tensorrt, instruction_set=instruction_set, mobile=mobile, on_stage=on_stage,
            )
        except ParityError:
            rejected = out.with_name(out.name + ".rejected")
            if (rejected / "edgec.json").exists():
                print_summary(rejected)
            raise
    print_summary(out)


def mobile_settings(accelerator: str | None, fixed_shape: str | None) -> dict:
    """--accelerator / --fixed-shape BxS as the mobile target's settings (empty: the general graph)."""
    settings: dict = {"accelerator": accelerator} if accelerator else {}
    if fixed_shape:
        batch, _, seq = fixed_shape.lower().partition("x")
        if not (batch.isdigit() and seq.isdigit()):
            raise ConfigError(f"--fixed-shape takes BATCHxSEQUENCE, e.g. 1x128; got {fixed_shape!r}")
        settings |= {"fixed_batch": int(batch), "fixed_seq": int(seq)}
    if settings and not accelerator:
        raise ConfigError("--fixed-shape shapes an accelerator graph; pass --accelerator coreml, nnapi or xnnpack with it")
    return settings


def search_build(model, target, budgets, recipe, calib, eval_set, train, out, bench, fractions, samples, force, load, ray) -> None:
    """--max-latency-ms / --max-size-mb: the fastest candidate within every budget, built at --out (exit 1 if none)."""
    if (eval_set or calib) is None:
        raise ConfigError("a budgeted search measures the drop on data; pass --eval (or --calib)")
    with stage_progress() as on_stage:
        _, chosen, tried = search(model, target, budgets=budgets, recipe=recipe, calib=calib, eval=eval_set or calib, train=train,
                                  out=out, bench=bench, fractions=fractions, samples=samples, force=force, load=load, on_stage=on_stage,
                                  ray=ray)
    rows = [[c.name, f"{c.drop:.2f}", f"{c.latency_ms:.2f}", f"{c.size_mb:.1f}",
             ", ".join(f"{k.removeprefix('max_')} +{v:.0%}" for k, v in c.over.items()) or "all met", "<-" if c is chosen else ""]
            for c in tried]
    selection, held_out = selection_split(eval_set or calib, recipe.seed)
    examples = min(samples, len(selection))
    stdout.print(table(f"budgeted search ({examples} selection examples per candidate; {len(held_out)} held out for the gate)", ["candidate", "drop", "latency ms", "size MB",
                                                                                    "budgets", "chosen"], rows))
    print_summary(out)
    if chosen.over:
        raise BudgetError(unmet_message(chosen, tried, out))


def print_summary(folder: Path) -> None:
    from edgec.artifact import load_artifact

    manifest = load_artifact(folder).manifest
    stdout.print(table(f"edgec build: {folder}", ["", ""], [list(r) for r in summary_rows(manifest)]))
    stdout.print(table("parity ledger (vs fp32 PyTorch)", *ledger_table(manifest)))
