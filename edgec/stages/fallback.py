"""Fallback stage: when static int8 breaks parity, keep the fewest most sensitive MatMuls in float."""

from __future__ import annotations

import json
from pathlib import Path

from edgec.pipeline import Context, ParityRow
from edgec.stages.quantize import RANGES_FILE, quantize_static_int8
from edgec.stages.verify import measure


def fallback(ctx: Context) -> Context:
    """Search k, the number of top-ranked nodes kept in float, for the smallest k that passes parity.

    Nodes are ranked by their own quantization error on the calibration set (see
    ops.calibration.matmul_quantization_error); k grows 1, 2, 4 ... until parity holds, then a
    binary search between the last failing and the first passing k finds the fewest.
    """
    if ctx.ledger[-1].passed:
        return ctx.with_note("fallback", {"kept_in_float": [], "reason": "int8 passed parity as quantized"})
    calibration = json.loads((ctx.workdir / "quantize" / RANGES_FILE).read_text())
    ranked = sorted(calibration["sensitivity"], key=lambda n: (-calibration["sensitivity"][n], n))
    if not ranked:
        return ctx.with_note("fallback", {"kept_in_float": [], "reason": "no quantized MatMul to keep in float"})
    source = ctx.workdir / "optimize" / "model.onnx"
    if not source.exists():
        source = ctx.workdir / "export" / "model.onnx"
    out_dir = ctx.workdir / "fallback"
    out_dir.mkdir(parents=True)
    tried: dict[int, tuple[Path, ParityRow]] = {}

    def attempt(k: int) -> bool:
        path = out_dir / f"keep{k}.onnx"
        quantize_static_int8(source, path, calibration["ranges"], ctx.target.quantization, exclude=tuple(ranked[:k]))
        tried[k] = (path, measure(ctx.with_note("fallback", {}, onnx_path=path), f"fallback k={k}"))
        return tried[k][1].passed

    failing, k = 0, 1
    while k < len(ranked) and not attempt(k):
        failing, k = k, min(2 * k, len(ranked))
    if k == len(ranked) and k not in tried:
        attempt(k)
    passing = k if tried[k][1].passed else None
    while passing is not None and passing - failing > 1:
        middle = (failing + passing) // 2
        failing, passing = (failing, middle) if attempt(middle) else (middle, passing)
    chosen = passing if passing is not None else max(tried)
    path = out_dir / "model.onnx"
    tried[chosen][0].rename(path)
    note = {
        "kept_in_float": ranked[:chosen],
        "tries": sorted(tried),
        "error_of_kept": {n: round(calibration["sensitivity"][n], 5) for n in ranked[:chosen]},
    }
    return ctx.with_note("fallback", note, onnx_path=path)
