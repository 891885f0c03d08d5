"""Fallback stage: when static int8 breaks parity, keep the fewest most sensitive MatMuls in float."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import cast

from edgec.artifacts.stage_notes import FallbackNote
from edgec.errors import InputError
from edgec.ops.frontier import fewest_passing
from edgec.parity.evalset import EvalSet, chained
from edgec.parity.ledger import ParityRow, parity_row
from edgec.parity.runtime import model_outputs
from edgec.pipeline import Calibration, Context, measure, selection_data
from edgec.stages.quantize import quantize_static_int8


def fallback(ctx: Context) -> Context:
    """Find k, the number of top-ranked nodes kept in float, as the smallest k that passes parity.

    Nodes are ranked by their own quantization error on the calibration set (see
    ops.calibration.matmul_quantization_error); ops.frontier.fewest_passing picks k. Every try, and whether to try at
    all, is judged on the selection part of the eval data (as `judge` says): the gate then judges the choice on data
    it never saw. k stops short of every node: a model with no int8 MatMul is not int8, so that outcome is an
    InputError rather than an artifact labelled int8.
    """
    calibration = cast(Calibration, ctx.calibration)  # the quantize stage set it: the fallback follows static int8
    ranked = sorted(calibration.sensitivity, key=lambda n: (-calibration.sensitivity[n], n))
    judged, selection, against = judge(ctx, calibration)
    quantized = measure(judged, "quantize", selection)
    if quantized.passed:
        note = FallbackNote(
            kept_in_float=[], quantized_nodes=len(ranked), against=against, reason="int8 passed parity as quantized"
        )
        return ctx.with_note("fallback", note)
    if not ranked:
        note = FallbackNote(
            kept_in_float=[], quantized_nodes=0, against=against, reason="no quantized MatMul to keep in float"
        )
        return ctx.with_note("fallback", note)
    out_dir = ctx.workdir / "fallback"
    out_dir.mkdir(parents=True)
    tried: dict[int, tuple[Path, ParityRow]] = {}

    def attempt(k: int) -> bool:
        path = out_dir / f"keep{k}.onnx"
        quantize_static_int8(
            calibration.prepared, path, calibration.ranges, ctx.target.quantization, exclude=tuple(ranked[:k])
        )
        tried[k] = (path, measure(dataclasses.replace(judged, onnx_path=path), f"fallback k={k}", selection))
        return tried[k][1].passed

    chosen = fewest_passing(len(ranked) - 1, attempt)
    if chosen is None:
        most = max(tried, default=0)
        failed = tried[most][1] if tried else quantized
        raise InputError(
            f"static int8 misses parity against {against} unless all {len(ranked)} weight MatMuls stay in float "
            f"(with {most} in float: {'; '.join(failed.failures)}), and a model with no int8 MatMul is not int8: "
            "build with --precision fp32 or fp16, or loosen --min-cosine/--min-agreement/--max-drop"
        )
    path = out_dir / "model.onnx"
    tried[chosen][0].rename(path)
    note = FallbackNote(
        kept_in_float=ranked[:chosen],
        quantized_nodes=len(ranked) - chosen,
        against=against,
        tries=sorted(tried),
        # Every quantized MatMul's own int8 error, most sensitive first (the report charts it).
        sensitivity={n: round(calibration.sensitivity[n], 5) for n in ranked},
    )
    return ctx.with_note("fallback", note, onnx_path=path)


def judge(ctx: Context, calibration: Calibration) -> tuple[Context, EvalSet, str]:
    """What judges int8 and the tries: (the context whose thresholds apply, the selection data with its reference,
    what that reference is, in words).

    While the float model quantization read (calibration.prepared) passes the gate's thresholds against the fp32
    reference, int8 is judged there too: it may spend what pruning left of the budget, and float MatMuls win back
    what it overspends. Where that float model already misses them, pruning spent the budget, and no MatMul in float
    wins it back: judged there, the search would end with every MatMul in float. int8 is then judged by its own loss:
    against that float model (a chained comparison), with the precision's own thresholds without the profile's
    [pruned] relaxation, which allows for pruning's drift and not quantization's.
    """
    selection, task = selection_data(ctx), ctx.source.task
    outputs = model_outputs(calibration.prepared, task, selection, ctx.target.session, "parity: float model for int8")
    before = parity_row("quantize input", calibration.prepared.name, task, selection, outputs, ctx.thresholds)
    if before.passed:
        return ctx, selection, "the fp32 reference"
    own = dataclasses.replace(ctx, thresholds=ctx.target.thresholds(ctx.precision, ctx.recipe.parity))
    return own, chained(selection, task, outputs), "the fp32 model it was quantized from"
