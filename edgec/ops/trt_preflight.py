"""TensorRT preflight: find what would make a TensorRT engine build fail, or run slower, before building one.

Pure checks on an in-memory ONNX model (no I/O). A TensorRT build takes minutes and fails with parser
messages about one node at a time; this reports every hazard at once, grouped, with what to do about it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

# The ONNX operator support matrix of onnx-tensorrt (docs/operators.md, 10.x line), as it reads for
# TensorRT 10.15 (opsets 9..24). Ops added late in 10.x (Attention, RMSNormalization, RotaryEmbedding,
# TensorScatter) exist only in opset 23+, so an opset 17..21 export never depends on them.
TRT_SUPPORTED_OPS = frozenset(
    [
        "Abs",
        "Acos",
        "Acosh",
        "Add",
        "And",
        "ArgMax",
        "ArgMin",
        "Asin",
        "Asinh",
        "Atan",
        "Atanh",
        "Attention",
        "AveragePool",
        "BatchNormalization",
        "BlackmanWindow",
        "Cast",
        "CastLike",
        "Ceil",
        "Celu",
        "Clip",
        "Concat",
        "Constant",
        "ConstantOfShape",
        "Conv",
        "ConvTranspose",
        "Cos",
        "Cosh",
        "CumSum",
        "DeformConv",
        "DepthToSpace",
        "DequantizeLinear",
        "Div",
        "Dropout",
        "Einsum",
        "Elu",
        "Equal",
        "Erf",
        "Exp",
        "Expand",
        "EyeLike",
        "Flatten",
        "Floor",
        "Gather",
        "GatherElements",
        "GatherND",
        "Gelu",
        "Gemm",
        "GlobalAveragePool",
        "GlobalLpPool",
        "GlobalMaxPool",
        "Greater",
        "GreaterOrEqual",
        "GridSample",
        "GroupNormalization",
        "GRU",
        "HammingWindow",
        "HannWindow",
        "HardSigmoid",
        "HardSwish",
        "Hardmax",
        "Identity",
        "If",
        "ImageScaler",
        "InstanceNormalization",
        "IsInf",
        "IsNaN",
        "LayerNormalization",
        "LeakyRelu",
        "Less",
        "LessOrEqual",
        "Log",
        "LogSoftmax",
        "Loop",
        "LRN",
        "LSTM",
        "LpNormalization",
        "LpPool",
        "MatMul",
        "Max",
        "MaxPool",
        "Mean",
        "MeanVarianceNormalization",
        "Min",
        "Mish",
        "Mod",
        "Mul",
        "Neg",
        "NonMaxSuppression",
        "NonZero",
        "Not",
        "OneHot",
        "Or",
        "Pad",
        "ParametricSoftplus",
        "Pow",
        "PRelu",
        "QuantizeLinear",
        "RandomNormal",
        "RandomNormalLike",
        "RandomUniform",
        "RandomUniformLike",
        "Range",
        "Reciprocal",
        "ReduceL1",
        "ReduceL2",
        "ReduceLogSum",
        "ReduceLogSumExp",
        "ReduceMax",
        "ReduceMean",
        "ReduceMin",
        "ReduceProd",
        "ReduceSum",
        "ReduceSumSquare",
        "Relu",
        "Reshape",
        "Resize",
        "ReverseSequence",
        "RMSNormalization",
        "RNN",
        "RoiAlign",
        "RotaryEmbedding",
        "Round",
        "STFT",
        "ScaledTanh",
        "Scan",
        "Scatter",
        "ScatterElements",
        "ScatterND",
        "Selu",
        "Shape",
        "Shrink",
        "Sigmoid",
        "Sign",
        "Sin",
        "Sinh",
        "Size",
        "Slice",
        "Softmax",
        "Softplus",
        "Softsign",
        "SpaceToDepth",
        "Split",
        "Sqrt",
        "Squeeze",
        "Sub",
        "Sum",
        "Tan",
        "Tanh",
        "TensorScatter",
        "ThresholdedRelu",
        "Tile",
        "TopK",
        "Transpose",
        "Trilu",
        "Unsqueeze",
        "Upsample",
        "Where",
        "Xor",
    ]
)

# The same matrix's "N" rows. Ops in neither set (newer than the matrix) are refused too; this set only
# lets the message say whether TensorRT documents the op as unsupported or does not know it at all.
TRT_UNSUPPORTED_OPS = frozenset(
    [
        "AffineGrid",
        "Bernoulli",
        "BitShift",
        "BitwiseAnd",
        "BitwiseNot",
        "BitwiseOr",
        "BitwiseXor",
        "Col2Im",
        "CenterCropPad",
        "Compress",
        "ConcatFromSequence",
        "ConvInteger",
        "DFT",
        "Det",
        "DynamicQuantizeLinear",
        "ImageDecoder",
        "MatMulInteger",
        "MaxRoiPool",
        "MaxUnpool",
        "MelWeightMatrix",
        "Multinomial",
        "NegativeLogLikelihoodLoss",
        "Optional",
        "OptionalGetElement",
        "OptionalHasElement",
        "QLinearConv",
        "QLinearMatMul",
        "RegexFullMatch",
        "SequenceAt",
        "SequenceConstruct",
        "SequenceEmpty",
        "SequenceErase",
        "SequenceInsert",
        "SequenceLength",
        "SequenceMap",
        "SoftmaxCrossEntropyLoss",
        "SplitToSequence",
        "StringConcat",
        "StringNormalizer",
        "StringSplit",
        "TfIdfVectorizer",
        "Unique",
    ]
)

# Types missing from the matrix's list of ONNX types TensorRT takes. DOUBLE is handled apart: the parser
# casts double weights down to float, but a network input or output cannot be double.
_UNTYPED = frozenset(
    {
        TensorProto.STRING,
        TensorProto.COMPLEX64,
        TensorProto.COMPLEX128,
        TensorProto.INT16,
        TensorProto.UINT16,
        TensorProto.UINT32,
        TensorProto.UINT64,
    }
)
# Output shapes that depend on tensor values (or control flow): TensorRT sizes them for the worst case.
_DATA_DEPENDENT = ("NonZero", "Unique", "Loop", "If", "Scan", "Compress")
_DEFAULT_DOMAINS = ("", "ai.onnx")
_MIN_OPSET = 17


@dataclass(frozen=True)
class Hazard:
    severity: str  # "error": TensorRT refuses the model or fails the build; "warning": builds, with a cost
    what: str
    fix: str


def preflight(model: onnx.ModelProto, varied_axes: dict[str, tuple[int, ...]]) -> list[Hazard]:
    """Hazards for a TensorRT 10 build of `model`, errors first, then by text.

    varied_axes: graph input name -> the axes the optimization profile varies (for transformers inputs
    (0, 1): batch and sequence). Repeated findings come as one hazard with a count and example names.
    """
    try:
        model = onnx.shape_inference.infer_shapes(model)  # types of intermediate tensors, for the dtype check
    except (onnx.shape_inference.InferenceError, ValueError):
        pass  # a model past 2 GB or with inconsistent types: check the types it declares
    graph = model.graph
    hazards = [
        *_op_hazards(graph),
        *_dtype_hazards(graph),
        *_profile_hazards(graph, varied_axes),
        *_reshape_hazards(graph, varied_axes),
        *_data_dependent_hazards(graph),
        *_opset_hazards(model),
    ]
    return sorted(hazards, key=lambda h: (h.severity != "error", h.what))


def _op_hazards(graph: onnx.GraphProto) -> list[Hazard]:
    by_op: dict[tuple[str, str], list[str]] = defaultdict(list)
    for node in _all_nodes(graph):
        domain = node.domain or ""
        if domain not in _DEFAULT_DOMAINS or node.op_type not in TRT_SUPPORTED_OPS:
            by_op[(domain, node.op_type)].append(_label(node))
    hazards = []
    for (domain, op), names in by_op.items():
        if domain not in _DEFAULT_DOMAINS:
            lack = f"op '{op}' (domain {domain}), which TensorRT's ONNX parser lacks"
            fix = (
                "Build from a graph without ONNX Runtime fusions (the target profile sets fuse = false), "
                "or register a TensorRT plugin of that name."
            )
        else:
            known = "lists as unsupported" if op in TRT_UNSUPPORTED_OPS else "does not know"
            lack = f"op '{op}', which TensorRT 10's ONNX parser {known}"
            fix = (
                f"Export without '{op}' (e.g. no ONNX Runtime quantization ops), or register a TensorRT plugin for it."
            )
        hazards.append(Hazard("error", f"{_nodes_use(names)} {lack} ({_examples(names)}).", fix))
    return hazards


def _dtype_hazards(graph: onnx.GraphProto) -> list[Hazard]:
    io = [*_fed_inputs(graph), *graph.output]
    typed = [(v.name, v.type.tensor_type.elem_type) for v in [*io, *graph.value_info]]
    typed += [(t.name, t.data_type) for t in graph.initializer]
    io_names = {v.name for v in io}
    refused: dict[int, list[str]] = defaultdict(list)
    for name, dtype in typed:
        if dtype in _UNTYPED or (dtype == TensorProto.DOUBLE and name in io_names):
            refused[dtype].append(name)
    hazards = [
        Hazard(
            "error",
            f"{_plural(len(names), 'tensor is', 'tensors are')} {_dtype(dtype)}, a type TensorRT has no "
            f"tensors of ({_examples(names)}).",
            "Cast to float32, float16, int32 or int64 before export.",
        )
        for dtype, names in ((dtype, _unique(names)) for dtype, names in refused.items())
    ]
    doubles = _unique(name for name, dtype in typed if dtype == TensorProto.DOUBLE and name not in io_names)
    if doubles:
        hazards.append(
            Hazard(
                "warning",
                f"{_plural(len(doubles), 'inner tensor is', 'inner tensors are')} DOUBLE; TensorRT casts them "
                f"down to float, clamping to +-FLT_MAX ({_examples(doubles)}).",
                "Export in float32 to keep the math exact.",
            )
        )
    hazards += _int64_hazards(graph)
    return hazards


def _int64_hazards(graph: onnx.GraphProto) -> list[Hazard]:
    inputs = [v.name for v in _fed_inputs(graph) if v.type.tensor_type.elem_type == TensorProto.INT64]
    weights = [t.name for t in graph.initializer if t.data_type == TensorProto.INT64]
    hazards = []
    if inputs:
        hazards.append(
            Hazard(
                "warning",
                f"{_plural(len(inputs), 'graph input is', 'graph inputs are')} int64 ({_examples(inputs)}): "
                "TensorRT 10 takes int64 inputs, earlier versions cast them to int32.",
                "Nothing to do on TensorRT 10; for older versions feed int32 (token ids fit in int32).",
            )
        )
    if weights:
        hazards.append(
            Hazard(
                "warning",
                f"{_plural(len(weights), 'initializer is', 'initializers are')} int64 ({_examples(weights)}): "
                "the parser casts them to int32 where a layer lacks int64.",
                "Usually harmless (shape constants fit in int32); make sure no constant exceeds the int32 range.",
            )
        )
    return hazards


def _profile_hazards(graph: onnx.GraphProto, varied_axes: dict[str, tuple[int, ...]]) -> list[Hazard]:
    inputs = {v.name: v for v in graph.input}
    hazards = []
    for name, axes in varied_axes.items():
        if name not in inputs:
            hazards.append(
                Hazard(
                    "error",
                    f"The optimization profile varies input '{name}', which the graph lacks.",
                    "Name only graph inputs in the profile (or re-export with that input).",
                )
            )
            continue
        dims = inputs[name].type.tensor_type.shape.dim
        for axis in axes:
            if axis >= len(dims):
                hazards.append(
                    Hazard(
                        "error",
                        f"The optimization profile varies axis {axis} of input '{name}', which has rank {len(dims)}.",
                        "Vary only axes the input has.",
                    )
                )
            elif dims[axis].HasField("dim_value"):
                hazards.append(
                    Hazard(
                        "error",
                        f"Input '{name}' has a fixed size {dims[axis].dim_value} on axis {axis}, which the "
                        "optimization profile varies.",
                        "Re-export with that axis dynamic (a named dim, e.g. dynamic_axes).",
                    )
                )
    return hazards


def _reshape_hazards(graph: onnx.GraphProto, varied_axes: dict[str, tuple[int, ...]]) -> list[Hazard]:
    # A target shape of fixed sizes only (no -1 to infer, no 0 to copy) on data whose size follows a varied
    # input can only hold for one batch and sequence length. Which position is which axis is not knowable
    # in general, hence a warning rather than an error.
    downstream = _downstream(graph, {name for name, axes in varied_axes.items() if axes})
    constants = {t.name: t for t in graph.initializer}
    constants.update(
        {n.output[0]: a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"}
    )
    pinned = [
        _label(node)
        for node in graph.node
        if node.op_type == "Reshape"
        and node.input[0] in downstream
        and node.input[1] in constants
        and not np.isin(numpy_helper.to_array(constants[node.input[1]]), (-1, 0)).any()
    ]
    if not pinned:
        return []
    return [
        Hazard(
            "warning",
            f"{_plural(len(pinned), 'Reshape has', 'Reshapes have')} a fixed target shape on data that follows "
            f"a varied input, which may pin the batch or sequence length ({_examples(pinned)}).",
            "Re-export with dynamic axes so the exporter writes -1 / 0 or a Shape-computed target.",
        )
    ]


def _data_dependent_hazards(graph: onnx.GraphProto) -> list[Hazard]:
    by_op: dict[str, list[str]] = defaultdict(list)
    for node in _all_nodes(graph):
        # Unique and Compress are also unsupported; the op check already reports them as errors.
        standard = (node.domain or "") in _DEFAULT_DOMAINS
        if standard and node.op_type in _DATA_DEPENDENT and node.op_type in TRT_SUPPORTED_OPS:
            by_op[node.op_type].append(_label(node))
    return [
        Hazard(
            "warning",
            f"{_nodes_use(names)} op '{op}', whose output shapes can depend on the data or on control flow "
            f"({_examples(names)}).",
            "Expect worst-case allocation and no shape specialization there; replace it with static ops where you can.",
        )
        for op, names in by_op.items()
    ]


def _opset_hazards(model: onnx.ModelProto) -> list[Hazard]:
    versions = [o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS]
    if not versions or versions[0] >= _MIN_OPSET:
        return []
    return [
        Hazard(
            "warning",
            f"The model uses ONNX opset {versions[0]}, below {_MIN_OPSET}.",
            f"Re-export at opset {_MIN_OPSET} or newer (LayerNormalization then stays one op for TensorRT).",
        )
    ]


def _all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Every node, including those in If / Loop / Scan bodies, which TensorRT parses too."""
    found = []
    for node in graph.node:
        found.append(node)
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else attr.graphs:
                found += _all_nodes(sub)
    return found


def _fed_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs a caller feeds: IR < 4 models also list every initializer as an input."""
    weights = {t.name for t in graph.initializer}
    return [v for v in graph.input if v.name not in weights]


def _downstream(graph: onnx.GraphProto, sources: set[str]) -> set[str]:
    """Tensors computed from any of `sources` (ONNX stores nodes in topological order, so one pass does)."""
    reached = set(sources)
    for node in graph.node:
        if reached.intersection(node.input):
            reached.update(node.output)
    return reached


def _label(node: onnx.NodeProto) -> str:
    return node.name or (node.output[0] if node.output else node.op_type)


def _unique(names) -> list[str]:
    return list(dict.fromkeys(names))


def _examples(names: list[str]) -> str:
    names = _unique(names)
    shown = ", ".join(f"'{n}'" for n in names[:3])
    return f"e.g. {shown}" + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _nodes_use(names: list[str]) -> str:
    return _plural(len(names), "node uses", "nodes use")


def _dtype(dtype: int) -> str:
    return TensorProto.DataType.Name(dtype)
