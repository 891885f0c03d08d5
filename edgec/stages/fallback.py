"""Fallback stage: when static int8 breaks parity, keep the fewest most sensitive MatMuls in float."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edgec.artifacts.stage_notes import FallbackNote
from edgec.ops.frontier import fewest_passing
from edgec.parity.ledger import ParityRow
from edgec.pipeline import Context, measure, selection_data
from edgec.stages.quantize import quantize_static_int8


def fallback(ctx: Context) -> Context:
    """Find k, the number of top-ranked nodes kept in float, as the smallest k that passes parity.

    Nodes are ranked by their own quantization error on the calibration set (see
    ops.calibration.matmul_quantization_error); ops.search.fewest_passing picks k. Every try, and whether to try at
    all, is judged on the selection part of the eval data: the gate then judges the choice on data it never saw.
    """
    selection = selection_data(ctx)
    if measure(ctx, "quantize", selection).passed:
        return ctx.with_note("fallback", FallbackNote(kept_in_float=[], reason="int8 passed parity as quantized"))
    calibration = ctx.calibration
    ranked = sorted(calibration.sensitivity, key=lambda n: (-calibration.sensitivity[n], n))
    if not ranked:
        return ctx.with_note("fallback", FallbackNote(kept_in_float=[], reason="no quantized MatMul to keep in float"))
    out_dir = ctx.workdir / "fallback"
    out_dir.mkdir(parents=True)
    tried: dict[int, tuple[Path, ParityRow]] = {}

    def attempt(k: int) -> bool:
        path = out_dir / f"keep{k}.onnx"
        quantize_static_int8(
            calibration.prepared, path, calibration.ranges, ctx.target.quantization, exclude=tuple(ranked[:k])
        )
        tried[k] = (path, measure(dataclasses.replace(ctx, onnx_path=path), f"fallback k={k}", selection))
        return tried[k][1].passed

    chosen = fewest_passing(len(ranked), attempt) or max(tried)  # none passes: all in float, and the gate fails
    path = out_dir / "model.onnx"
    tried[chosen][0].rename(path)
    note = FallbackNote(
        kept_in_float=ranked[:chosen],
        tries=sorted(tried),
        # Every quantized MatMul's own int8 error, most sensitive first (the report charts it).
        sensitivity={n: round(calibration.sensitivity[n], 5) for n in ranked},
    )
    return ctx.with_note("fallback", note, onnx_path=path)
