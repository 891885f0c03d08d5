"""What a build writes after its stages, from the final context: the golden sample, the manifest, the profile the
report shows, and the message a rejected build raises."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import onnx

from edgec.artifacts.artifact import package_versions, sha256_file
from edgec.artifacts.manifest import Manifest, ParityRecord, SessionRecord, Sizes, SourceRecord
from edgec.backends import get_backend
from edgec.hardware import host
from edgec.parity import golden
from edgec.parity.ledger import first_loss
from edgec.parity.runtime import model_forward
from edgec.pipeline import Context
from edgec.running.bench import BenchConfig, synthetic_inputs
from edgec.running.profiling import Profile, profile_session


def write_golden(ctx: Context, staging: Path) -> dict:
    """The golden sample (texts from the gate's data, reference and artifact outputs) into the artifact."""
    texts, reference = golden.take(ctx.evaluation, ctx.source.task, ctx.recipe.seed)
    model = ctx.parity_model or ctx.onnx_path
    outputs, counts, _ = golden.run(
        texts,
        model_forward(model, ctx.target.session, ctx.source.task),
        ctx.source.tokenizer,
        ctx.recipe.max_length,
        ctx.source.task,
    )
    return golden.write(
        staging, texts, reference, outputs, counts, golden.runtime_name(model, ctx.ledger[-1].simulated)
    )


def _signature(values) -> list[dict[str, Any]]:
    return [
        {
            "name": v.name,
            "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
            "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
        }
        for v in values
    ]


def manifest_for(ctx: Context, seconds: float, sample: dict) -> Manifest:
    """Everything needed to trust, reproduce and run the artifact, except the file table."""
    model_file = ctx.files[0]
    if ctx.onnx_path is None:  # issue 18: a program made without ONNX (ExecuTorch) names its own inputs and outputs
        io = ctx.notes.emit.io
    else:  # the artifact's file, or the ONNX it was converted from
        model = onnx.load(str(ctx.onnx_path), load_external_data=False)
        io = {"inputs": _signature(model.graph.input), "outputs": _signature(model.graph.output)}
    config = ctx.source.model.config
    return Manifest(
        versions=package_versions(),
        host=host().to_dict(),
        source=SourceRecord(
            path=str(ctx.source.path.resolve()),
            model_type=ctx.source.model_type,
            weights_sha256={p.name: sha256_file(p) for p in ctx.source.weight_files},
        ),
        task=ctx.source.task,
        pooling=dataclasses.asdict(ctx.source.pooling) if ctx.source.pooling else None,
        labels={str(k): v for k, v in (config.id2label or {}).items()}
        if ctx.source.task != "feature-extraction"
        else None,
        target=ctx.target,
        instruction_set=ctx.target.instruction_set,
        session=SessionRecord(
            settings=ctx.target.session, chosen_by=f"target {ctx.target.name} for {ctx.target.instruction_set}"
        ),
        precision=ctx.precision,
        recipe=ctx.recipe,
        model_file=model_file.name,
        io=io,
        sizes=Sizes(
            model_bytes=model_file.stat().st_size,
            source_weights_bytes=sum(p.stat().st_size for p in ctx.source.weight_files),
        ),
        stages=ctx.notes,
        engine=ctx.notes.engine,
        build_seconds=round(seconds, 1),
        parity=ParityRecord(
            passed=ctx.ledger[-1].passed,
            thresholds=ctx.thresholds,
            reference_metric=ctx.evaluation.reference_metric,
            eval_data=ctx.evaluation.dataset.source
            if ctx.evaluation.dataset is not ctx.calib
            else "calibration sample (no --eval)",
            eval_examples=len(ctx.evaluation.dataset),
            selection_examples=len(ctx.selection.dataset) if ctx.selection else 0,
            golden=sample,
            ledger=ctx.ledger,
        ),
    )


def build_profile(ctx: Context) -> tuple[Profile, dict[str, Any]] | None:
    """Where the artifact's time goes on the build machine, where it runs there as built (for the report; not in the
    manifest, whose content stays reproducible): a short profile at batch 1 and up to 128 tokens."""
    if not get_backend(ctx.target.backend).profiles_here:
        return None
    config = BenchConfig(batch=1, seq_len=min(128, ctx.recipe.max_length), threads=None, warmup=5, runs=20)
    feeds = synthetic_inputs(len(ctx.source.tokenizer), config, list(ctx.source.input_names))
    return profile_session(
        ctx.files[0], feeds, ctx.target.session, warmup=config.warmup, runs=config.runs
    ), dataclasses.asdict(config)


def parity_failure_message(ctx: Context, rejected: Path) -> str:
    final, lost = ctx.ledger[-1], first_loss(ctx.ledger)
    where = f"accuracy was first lost at stage '{lost.stage}'" if lost else "no single stage failed"
    return (
        f"parity failed: {'; '.join(final.failures)}; {where}; the rejected artifact and its report are in {rejected}"
    )
