"""Quantize stage: fp16, dynamic int8, or static int8 (Q/DQ) with edgec's own activation calibration."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import numpy as np
import onnx

from edgec.inference import ort_session
from edgec.ops.calibration import activation_range, matmul_quantization_error
from edgec.pipeline import Context
from edgec.targets import QuantSettings, SessionSettings

RANGES_FILE = "ranges.json"
# Rows of each activation kept for calibration statistics (real tokens only, sampled deterministically).
_MAX_ROWS = 16384


@contextlib.contextmanager
def _quiet_root_logger():
    """ORT's quantizer warns on the root logger about every fused op it has no type for; those are expected."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize(ctx: Context) -> Context:
    """Write work/quantize/model.onnx in the recipe's precision."""
    out_dir = ctx.workdir / "quantize"
    out_dir.mkdir(parents=True)
    path = out_dir / "model.onnx"
    precision = ctx.precision
    if precision == "fp16":
        note = to_fp16(ctx.onnx_path, path)
    elif precision == "int8-dynamic":
        note = quantize_dynamic_int8(ctx.onnx_path, path, ctx.target.quantization)
    else:
        calib_feeds = calibration_feeds(ctx)
        ranges, sensitivity = calibrate(ctx.onnx_path, calib_feeds, ctx)
        (out_dir / RANGES_FILE).write_text(json.dumps({"source": str(ctx.onnx_path), "ranges": ranges, "sensitivity": sensitivity}))
        note = quantize_static_int8(ctx.onnx_path, path, ranges, ctx.target.quantization, exclude=())
        note |= {"calibration": ctx.recipe.quant.calibration, "calib_samples": len(ctx.calib)}
    return ctx.with_note("quantize", note, onnx_path=path)


def to_fp16(source: Path, out: Path) -> dict:
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(source)))
    # The pooling tail (edgec_* nodes) stays fp32: summing over tokens and the 1e-12 norm floor need the range.
    # Symbolic shape inference first gives the converter the types it needs to put Casts at that boundary.
    pooling = [n.name for n in model.model.graph.node if n.name.startswith("edgec_")]
    model.convert_float_to_float16(use_symbolic_shape_infer=True, keep_io_types=True, node_block_list=pooling)
    model.model.producer_name, model.model.producer_version = "edgec", ""
    model.save_model_to_file(str(out))
    return {"method": "fp16 weights and activations, fp32 inputs/outputs and pooling"}


def weight_matmuls(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """MatMul nodes whose second input is a constant weight (activation x activation products stay float)."""
    constants = {i.name for i in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in constants]


def embedding_gathers(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Gather nodes that look rows up in a constant table (token and position embeddings): int8 storage."""
    tables = {i.name for i in model.graph.initializer if len(i.dims) == 2}
    return [n for n in model.graph.node if n.op_type == "Gather" and n.input[0] in tables]


def quantize_dynamic_int8(source: Path, out: Path, settings: QuantSettings) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_root_logger():
        quantize_dynamic(
            str(source), str(out), op_types_to_quantize=["MatMul", "Attention", "Gather"], per_channel=settings.per_channel,
            weight_type=QuantType.QInt8,
            # Fused contrib ops (Attention, SkipLayerNormalization) carry no type info for ORT's quantizer.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True},
        )
    return {"method": "dynamic int8 (activation ranges computed per batch at run time)", "per_channel": settings.per_channel}


def quantize_static_int8(
    source: Path, out: Path, ranges: dict[str, list[float]], settings: QuantSettings, exclude: tuple[str, ...]
) -> dict:
    """Q/DQ on the inputs of weight MatMuls only; outputs stay float so no requantization error piles up."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    model = onnx.load(str(source))
    nodes = [n.name for n in (*weight_matmuls(model), *embedding_gathers(model)) if n.name not in exclude]
    types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    tensors = TensorsData(
        CalibrationMethod.MinMax,
        {name: TensorData(lowest=np.float32(low), highest=np.float32(high)) for name, (low, high) in ranges.items()},
    )
    quantizer = QDQQuantizer(
        model, settings.per_channel, False, types[settings.weight_type], types[settings.activation_type], tensors,
        nodes, list(exclude), ["MatMul", "Gather"],
        {
            "DefaultTensorType": onnx.TensorProto.FLOAT,
            "ActivationSymmetric": settings.activation_symmetric,
            "WeightSymmetric": True,
            "OpTypesToExcludeOutputQuantization": ["MatMul", "Gather"],
        },
    )
    with _quiet_root_logger():
        quantizer.quantize_model()
    quantizer.model.model.producer_name, quantizer.model.model.producer_version = "edgec", ""
    quantizer.model.save_model_to_file(str(out))
    return {
        "method": "static int8 Q/DQ", "quantized_nodes": len(nodes),
        "activations": settings.activation_type, "weights": f"{settings.weight_type} symmetric"
        + (" per-channel" if settings.per_channel else ""),
    }


def calibration_feeds(ctx: Context) -> list[dict[str, np.ndarray]]:
    from edgec.inference import encode_batches

    return [b.feeds for b in encode_batches(ctx.source.tokenizer, ctx.calib, max_length=ctx.recipe.max_length, batch_size=16)]


def calibrate(source: Path, feeds: list[dict[str, np.ndarray]], ctx: Context) -> tuple[dict, dict]:
    """Activation ranges of every weight-MatMul input, and each MatMul's quantization error (for fallback)."""
    model = onnx.load(str(source))
    matmuls = weight_matmuls(model)
    weights = {i.name: i for i in model.graph.initializer}
    activations = capture(model, sorted({n.input[0] for n in matmuls}), feeds, ctx.target.session)
    quant = ctx.recipe.quant
    ranges = {name: list(activation_range(rows, quant.calibration, quant.percentile)) for name, rows in activations.items()}
    settings = ctx.target.quantization
    sensitivity = {
        node.name: matmul_quantization_error(
            activations[node.input[0]][:2048],
            onnx.numpy_helper.to_array(weights[node.input[1]]),
            tuple(ranges[node.input[0]]),
            signed=settings.activation_type == "int8",
            per_channel=settings.per_channel,
        )
        for node in matmuls
    }
    return ranges, sensitivity


def capture(model: onnx.ModelProto, names: list[str], feeds: list[dict[str, np.ndarray]], settings: SessionSettings) -> dict[str, np.ndarray]:
    """Run the model with `names` exposed as outputs; (rows, features) of real (unpadded) tokens for each."""
    import tempfile

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in existing)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.onnx"
        onnx.save(probe, str(path))
        session = ort_session(path, settings)
        input_names = {i.name for i in session.get_inputs()}
        collected: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for feed in feeds:
            values = session.run(names, {k: v for k, v in feed.items() if k in input_names})
            real = feed["attention_mask"].astype(bool)
            for name, value in zip(names, values):
                rows = value[real] if value.shape[:2] == real.shape else value.reshape(-1, value.shape[-1])
                collected[name].append(rows.astype(np.float32))
    rng = np.random.default_rng(0)
    result = {}
    for name, parts in collected.items():
        rows = np.concatenate(parts)
        if len(rows) > _MAX_ROWS:
            rows = rows[np.sort(rng.choice(len(rows), _MAX_ROWS, replace=False))]
        result[name] = rows
    return result
