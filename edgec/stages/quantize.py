"""Quantize stage: fp16, dynamic int8, or static int8 (Q/DQ) with edgec's own activation calibration."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx

from edgec.artifacts.stage_notes import QuantizeNote
from edgec.ops import outliers
from edgec.ops.calibration import RunningStats, matmul_quantization_error
from edgec.ops.constant_folding import Folded, fold_constants, input_independent
from edgec.ops.graph import bypass_activation_dequantize, quantize_embedding_tables, scale_matmul_inputs, weightless
from edgec.ops.smoothing import smoothing_scales
from edgec.parity.evalset import eval_texts
from edgec.pipeline import Calibration, Context, release_freed_memory
from edgec.progress import track
from edgec.recipe import QuantConfig
from edgec.running.inference import encode_batches, ort_session
from edgec.targets import QuantSettings, SessionSettings

# Measured on MiniLM/STS-B: 0.7-0.9 best, 0.3 catastrophic, 0.5 mediocre; on all-mpnet-base-v2 (STS-B dev cosine to
# fp32, benchmarks/mpnet_int8_study.py): 0.8 best of 0.5, 0.65, 0.8 and 0.9.
SMOOTHING_ALPHA = 0.8
# Rows (tokens) of each weight-MatMul input kept to estimate the fallback's per-node error: a uniform sample of all
# real tokens, bounded so that calibration memory does not grow with the number of texts.
_SENSITIVITY_ROWS = 1024
# Embedding tables narrower than this stay float (embedding_gathers).
_MIN_INT8_ROW = 32


@contextlib.contextmanager
def quiet_root_logger():
    """ORT's tools log on the root logger: the quantizer about every fused op it has no type for, the ORT-format
    converter about every file it writes. Those are expected."""
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
    return QUANTIZERS[ctx.precision.needs.quantizer](ctx, path)


def _static_int8(ctx: Context, path: Path) -> Context:
    prepared, ranges, sensitivity, split, folded = prepare_static(ctx, path.parent)
    release_freed_memory()  # calibration's sessions and copies, before quantization loads the model again
    note = dataclasses.replace(
        quantize_static_int8(prepared, path, ranges, ctx.target.quantization, exclude=()),
        calibration=ctx.recipe.quant.calibration,
        calib_samples=len(ctx.calib),
        smoothing_alpha=SMOOTHING_ALPHA,
        outlier_channels_in_float=sum(len(v) for v in split.values()),
        inputs_with_outliers=len(split),
        folded_nodes=folded.nodes,
        folded_bytes=folded.bytes_added,
    )
    return ctx.with_note("quantize", note, onnx_path=path, calibration=Calibration(prepared, ranges, sensitivity))


def to_fp16(source: Path, out: Path) -> QuantizeNote:
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(source)))
    # The pooling tail (edgec_* nodes) stays fp32: summing over tokens and the 1e-12 norm floor need the range.
    # Symbolic shape inference first gives the converter the types it needs to put Casts at that boundary.
    pooling = [n.name for n in model.model.graph.node if n.name.startswith("edgec_")]
    model.convert_float_to_float16(use_symbolic_shape_infer=True, keep_io_types=True, node_block_list=pooling)
    model.model.producer_name, model.model.producer_version = "edgec", ""
    model.save_model_to_file(str(out))
    return QuantizeNote(method="fp16 weights and activations, fp32 inputs/outputs and pooling")


def weight_matmuls(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """MatMul nodes whose second input is a constant weight and whose first depends on the model's inputs. Activation
    x activation products stay float, and so do the outlier channels' MatMuls of ops.outliers. So does a product of
    constants that fold_constants left (over its size bound): quantized, it would dequantize and multiply on every run,
    while in float ONNX Runtime computes it once when the session loads."""
    constants = {i.name for i in model.graph.initializer}
    fixed = input_independent(model) | constants
    return [
        n
        for n in model.graph.node
        if n.op_type == "MatMul"
        and n.input[1] in constants
        and n.input[0] not in fixed
        and not n.name.endswith(outliers.SUFFIX)
    ]


def embedding_gathers(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Gather nodes that look rows of at least _MIN_INT8_ROW values up in a constant float table (token, position and
    type embeddings). Narrower tables stay float: MPNet's relative position bias holds one value per head and is
    looked up seq x seq times per run, so 8 bits would save a few bytes and cost a dequantizing Mul per lookup."""
    tables = {
        i.name
        for i in model.graph.initializer
        if len(i.dims) == 2 and i.data_type == onnx.TensorProto.FLOAT and i.dims[1] >= _MIN_INT8_ROW
    }
    return [n for n in model.graph.node if n.op_type == "Gather" and n.input[0] in tables]


def quantize_dynamic_int8(source: Path, out: Path, settings: QuantSettings) -> QuantizeNote:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_root_logger():
        quantize_dynamic(
            str(source),
            str(out),
            op_types_to_quantize=["MatMul", "Gather"],
            per_channel=settings.per_channel,
            weight_type=QuantType.QInt8,
            # Fused contrib ops (MultiHeadAttention, FastGelu) carry no type info for ORT's quantizer.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True},
        )
    return QuantizeNote(
        method="dynamic int8 (activation ranges computed per batch at run time)", per_channel=settings.per_channel
    )


def quantize_static_int8(
    source: Path, out: Path, ranges: dict[str, list[float]], settings: QuantSettings, exclude: tuple[str, ...]
) -> QuantizeNote:
    """Q/DQ on the inputs of weight MatMuls only; outputs stay float so no requantization error piles up."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    model = onnx.load(str(source))
    nodes = [n.name for n in weight_matmuls(model) if n.name not in exclude]
    types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    tensors = TensorsData(
        CalibrationMethod.MinMax,
        {name: TensorData(lowest=np.float32(low), highest=np.float32(high)) for name, (low, high) in ranges.items()},
    )
    quantizer = QDQQuantizer(
        model,
        settings.per_channel,
        settings.reduce_range,
        types[settings.weight_type],
        types[settings.activation_type],
        tensors,
        nodes,
        list(exclude),
        ["MatMul"],
        {
            "DefaultTensorType": onnx.TensorProto.FLOAT,
            "ActivationSymmetric": settings.activation_symmetric,
            "WeightSymmetric": True,
            "OpTypesToExcludeOutputQuantization": ["MatMul"],
            # One weight scale per output channel: axis 1 of a MatMul's (in, out) weight.
            "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
            "QuantizeBias": False,
        },
    )
    with quiet_root_logger():
        quantizer.quantize_model()
    quantized = quantizer.model.model
    bypass_activation_dequantize(quantized)
    tables = embedding_gathers(quantized) if settings.int8_embeddings else []
    quantize_embedding_tables(quantized, tables)
    del quantized.graph.value_info[:]  # with_types' shapes, which the quantizer needed and ONNX Runtime must not have
    quantized.producer_name, quantized.producer_version = "edgec", ""
    onnx.save(quantized, str(out))
    return QuantizeNote(
        method="static int8 Q/DQ",
        quantized_nodes=len(nodes),
        int8_embedding_tables=len(tables),
        activations=settings.activation_type + (" symmetric" if settings.activation_symmetric else ""),
        weights=f"{settings.weight_type} symmetric"
        + (" per-channel" if settings.per_channel else "")
        + (" 7-bit (reduce_range)" if settings.reduce_range else ""),
    )


def calibration_feeds(ctx: Context) -> list[dict[str, np.ndarray]]:
    """The calibration texts as the model sees them (an embedding model takes each side of a pair alone)."""
    texts = eval_texts(ctx.source.task, ctx.calib)
    return [
        b.feeds for b in encode_batches(ctx.source.tokenizer, texts, max_length=ctx.recipe.max_length, batch_size=16)
    ]


def with_types(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model, typed in place by symbolic shape inference, which knows ORT's contrib ops.

    Without types on the fused ops' outputs, ORT's QDQ quantizer silently treats the MatMul inputs as
    non-float and quantizes the weights only (ORT then runs MatMulNBits: smaller, not faster).

    Only the quantizer reads these shapes: a file ONNX Runtime runs goes without them. Given them, ORT's memory
    planner stopped reusing activation buffers from layer to layer: on DeBERTa-v3 at base width (batch 32, 318 tokens)
    one run took 0.84 GiB more per layer: 2.0 GiB for 2 layers against 1.1 GiB for 1 or 2 layers without them. A
    12-layer base model would take about 10 GiB a session: calibration's, every parity row's, every fallback try's.
    """
    from onnxruntime.quantization.quant_utils import add_infer_metadata
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    # On a copy without the weights: the inference copies the model it is given once per pass and keeps every copy
    # until its result is freed (on a 403 MiB DeBERTa, 3.6 GiB more at the peak, 1.4 GiB kept with the result).
    typed = SymbolicShapeInference.infer_shapes(weightless(model), auto_merge=True, guess_output_rank=False)
    for field in ("node", "output", "value_info"):  # nodes too: it types the subgraphs of If, Loop and Scan in place
        declared = getattr(model.graph, field)
        del declared[:]
        declared.extend(getattr(typed.graph, field))
    add_infer_metadata(model)  # tells the quantizer not to redo it with onnx's inference, which lacks contrib ops
    return model


def prepare_static(ctx: Context, out_dir: Path) -> tuple[Path, dict, dict, dict[str, np.ndarray], Folded]:
    """Fold constants, smooth activation outliers into the weights, calibrate, split off outlier channels: the float
    model to quantize, its ranges, sensitivities, the outlier channels of each MatMul input that has some, and what
    folding did."""
    feeds = calibration_feeds(ctx)
    model = onnx.load(str(ctx.onnx_path))
    # ONNX Runtime folds input-independent work itself in a float graph, but not through the DequantizeLinear
    # quantization would put in it (ops.constant_folding): fold first, so none of it is quantized or calibrated.
    folded = fold_constants(model)
    model = with_types(model)
    model = smooth(model, smoothable_groups(model), feeds, ctx.target.session)
    ranges, sensitivity, split = calibrate(model, feeds, ctx.recipe.quant, ctx.target.quantization, ctx.target.session)
    if split:
        for node in weight_matmuls(model):
            if node.input[0] in split:
                outliers.split_outlier_channels(model, node, split[node.input[0]])
        model = with_types(model)
    prepared = out_dir / "prepared.onnx"
    onnx.save(model, str(prepared))
    return prepared, ranges, sensitivity, split, folded


def smoothable_groups(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """Weight MatMuls grouped by their shared input: every input is smoothed, the FFN down-projection's too.

    The down-projection reads GELU outputs, where all-mpnet-base-v2's layers 6-10 have 1-3 channels (of 3072) at
    30-100 while the median channel peaks near 2: one per-tensor scale leaves most channels a handful of the 256
    levels. Measured on STS-B dev (benchmarks/mpnet_int8_study.py): that down-projection alone took the embeddings'
    cosine to fp32 from 1.0 to 0.918 (every other MatMul kind alone: >= 0.999); smoothing it too lifted the int8
    model's cosine from 0.917 to 0.996 for one Mul per layer on the 4x wider input (whose time the shared machine
    measured too noisily to settle: benchmarks/RESULTS.md, mpnet int8 study).
    """
    groups: dict[str, list[onnx.NodeProto]] = {}
    for node in weight_matmuls(model):
        groups.setdefault(node.input[0], []).append(node)
    return groups


def smooth(
    model: onnx.ModelProto,
    groups: dict[str, list[onnx.NodeProto]],
    feeds: list[dict[str, np.ndarray]],
    session: SessionSettings,
    alpha: float = SMOOTHING_ALPHA,
) -> onnx.ModelProto:
    """The model with each group's shared input divided per channel by ops.smoothing's scales, which multiply the
    weights' rows instead (groups: input name -> the weight MatMuls reading it). The scales come from a calibration
    pass: per-channel |max| of each input over its real tokens, and of each weight row over every MatMul sharing it;
    the ranges are then measured on the smoothed inputs."""
    absmax = {
        name: stats.channel_absmax for name, stats in collect_stats(model, sorted(groups), feeds, session).items()
    }
    weights = {i.name: i for i in model.graph.initializer}
    # (in,) per input channel: the largest |weight| over every output of every MatMul sharing this input
    row_absmax = {
        name: np.max([np.abs(onnx.numpy_helper.to_array(weights[n.input[1]])).max(axis=1) for n in nodes], axis=0)
        for name, nodes in groups.items()
    }  # one weight's numpy copy at a time, not all of them at once
    scales = {name: smoothing_scales(absmax[name], row_absmax[name], alpha) for name in groups}
    scale_matmul_inputs(model, groups, scales)
    return with_types(model)


def calibrate(
    model: onnx.ModelProto,
    feeds: list[dict[str, np.ndarray]],
    quant: QuantConfig,
    settings: QuantSettings,
    session: SessionSettings,
) -> tuple[dict, dict, dict]:
    """Activation ranges of every weight-MatMul input, each MatMul's quantization error (for fallback), and, where the
    target splits them off, each input's outlier channels (ops.outliers; its range is then that of the other channels)."""
    matmuls = weight_matmuls(model)
    weights = {i.name: i for i in model.graph.initializer}
    names = sorted({n.input[0] for n in matmuls})
    stats = collect_stats(model, names, feeds, session, keep=_SENSITIVITY_ROWS)
    split = {
        name: found
        for name in names
        if settings.split_outliers
        and len(found := outliers.outlier_channels(stats[name].channel_absmax, stats[name].rows))
    }
    # the split inputs' ranges leave their outlier channels out: a pass over those inputs without them
    in_range = stats | (collect_stats(model, sorted(split), feeds, session, drop=split) if split else {})
    ranges = {
        name: list(activation.range(quant.calibration, quant.percentile)) for name, activation in in_range.items()
    }
    sensitivity = {
        node.name: matmul_quantization_error(
            stats[node.input[0]].rows,
            onnx.numpy_helper.to_array(weights[node.input[1]]),
            tuple(ranges[node.input[0]]),
            signed=settings.activation_type == "int8",
            per_channel=settings.per_channel,
            reduce_range=settings.reduce_range,
            outliers=split.get(node.input[0]),
        )
        for node in matmuls
    }
    return ranges, sensitivity, split


def probe_runs(
    model: onnx.ModelProto, names: list[str], feeds: list[dict[str, np.ndarray]], settings: SessionSettings
) -> Iterator[tuple[dict[str, np.ndarray], list[np.ndarray]]]:
    """Run the model with `names` exposed as outputs, one feed at a time: (feed, the named values) per run."""
    import tempfile

    existing = {o.name for o in model.graph.output}
    added = [onnx.ValueInfoProto(name=n) for n in names if n not in existing]
    declared = list(model.graph.value_info)  # still valid once removed from the graph
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.onnx"
        # Saved with the extra outputs and without the inferred shapes (see with_types), then restored: no copy of
        # the whole model.
        model.graph.output.extend(added)
        del model.graph.value_info[:]
        try:
            onnx.save(model, str(path))
        finally:
            del model.graph.output[len(model.graph.output) - len(added) :]
            model.graph.value_info.extend(declared)
        session = ort_session(path, settings)
        input_names = {i.name for i in session.get_inputs()}
        for feed in feeds:
            yield feed, session.run(names, {k: v for k, v in feed.items() if k in input_names})


def collect_stats(
    model: onnx.ModelProto,
    names: list[str],
    feeds: list[dict[str, np.ndarray]],
    settings: SessionSettings,
    keep: int = 0,
    drop: dict[str, np.ndarray] | None = None,
) -> dict[str, RunningStats]:
    """Run the model with `names` exposed as outputs and accumulate each one's statistics over the real (unpadded)
    tokens, batch by batch: memory holds one batch and the statistics, whatever the number of texts. `drop`: channels
    (last axis) of a name left out of its statistics."""
    stats = {name: RunningStats(keep=keep, seed=index) for index, name in enumerate(names)}
    drop = drop or {}
    for feed, values in probe_runs(model, names, track(feeds, "calibration"), settings):
        real = feed["attention_mask"].astype(bool)
        for name in names:
            # Each output is let go once read: the loop would otherwise hold this batch's outputs, every exposed
            # activation of every layer, while the next batch runs.
            value = values.pop(0)
            rows = value[real] if value.shape[:2] == real.shape else value.reshape(-1, value.shape[-1])
            del value
            stats[name].add(np.delete(rows, drop[name], axis=-1) if name in drop else rows)
            del rows
    return stats


QUANTIZERS: dict[str, Callable[[Context, Path], Context]] = {
    "fp16": lambda ctx, path: ctx.with_note("quantize", to_fp16(ctx.onnx_path, path), onnx_path=path),
    "dynamic-int8": lambda ctx, path: ctx.with_note(
        "quantize", quantize_dynamic_int8(ctx.onnx_path, path, ctx.target.quantization), onnx_path=path
    ),
    "static-int8": _static_int8,
}
"""The quantize stage's method for each precision.Needs.quantizer: writes the model at the path, returns the context."""
