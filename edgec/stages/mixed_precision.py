"""Mixed precision for strongly typed engines (TensorRT 10 and 11): the ONNX typed as the engine runs it.

Each tensor's largest |value| is measured on the calibration data (a running maximum per tensor, batch by batch),
ops.mixed_precision decides which nodes stay fp32, and ops.fp16_graph types the rest fp16. The same file then
runs on ONNX Runtime CPU, with fp16's rounding made explicit, in the engine's place.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx

from edgec.ops.fp16_graph import fp16_rounding_model, to_fp16
from edgec.ops.mixed_precision import BY_DATA, DATA_MAX, finite_absmax, fp32_nodes, prepare_for_typing, tensor_types
from edgec.stages.quantize import probe_runs
from edgec.targets import SessionSettings

QDQ_FP16_OPSET = 19
"""QuantizeLinear and DequantizeLinear take fp16 inputs and scales from opset 19 (TensorRT 10.0's parser reads it)."""
_QDQ = ("QuantizeLinear", "DequantizeLinear")


def type_for_engine(source: Path, out: Path, feeds: list[dict[str, np.ndarray]], settings: SessionSettings) -> dict:
    """Write `source` to `out` with its float parts fp16 where the calibration `feeds` show fp16 is safe.

    Returns the note for the report: the opset, how many nodes run in fp16, and the fp32 ones grouped by reason.
    """
    model = _with_qdq_opset(onnx.load(str(source)))
    prepare_for_typing(model)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    keep = fp32_nodes(model, running_absmax(model, feeds, settings))
    typed = onnx.shape_inference.infer_shapes(to_fp16(model, set(keep)), strict_mode=True)
    onnx.checker.check_model(typed, full_check=True)
    typed.producer_name, typed.producer_version = "edgec", ""
    onnx.save(typed, str(out))
    types = tensor_types(typed)
    float_nodes = [n for n in typed.graph.node if any(types.get(t) == onnx.TensorProto.FLOAT16 for t in n.output)]
    reasons = Counter(reason.split(":")[0] for reason in keep.values())
    return {
        "method": "fp16 where the calibration data allows (AutoCast's rules), fp32 elsewhere",
        "data_max": DATA_MAX,
        "opset": next(o.version for o in typed.opset_import if o.domain in ("", "ai.onnx")),
        "fp16_nodes": len(float_nodes),
        "fp32_nodes": dict(sorted(reasons.items())),
        "fp32_by_data": {name: reason for name, reason in sorted(keep.items()) if reason.startswith(BY_DATA)},
    }


def running_absmax(
    model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], settings: SessionSettings
) -> dict[str, float]:
    """Largest finite |value| of every float tensor on the feeds: one running maximum per tensor, never the values."""
    types = tensor_types(model)
    float_type = onnx.TensorProto.FLOAT
    names = sorted({o for n in model.graph.node for o in n.output if types.get(o) == float_type})
    inputs = [i.name for i in model.graph.input if types.get(i.name) == float_type]
    peaks = dict.fromkeys([*names, *inputs], 0.0)
    for feed, values in probe_runs(model, names, feeds, settings):
        for name, value in [*zip(names, values), *((i, feed[i]) for i in inputs)]:
            peaks[name] = max(peaks[name], finite_absmax(value))
    return peaks


def write_rounding_model(typed: Path, out: Path) -> Path:
    """The fp32 copy of an fp16-typed ONNX in which every fp16 tensor is rounded through a Cast pair (for ORT CPU)."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(typed)), strict_mode=True)
    onnx.save(fp16_rounding_model(model), str(out))
    return out


def _with_qdq_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """Q/DQ graphs move to opset 19 so that their scales can be fp16 (the default domain only)."""
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset >= QDQ_FP16_OPSET or not any(n.op_type in _QDQ for n in model.graph.node):
        return model
    from onnx import version_converter

    converted = version_converter.convert_version(model, QDQ_FP16_OPSET)
    converted.ir_version = max(converted.ir_version, 9)  # opset 19 needs IR version 9
    return converted
