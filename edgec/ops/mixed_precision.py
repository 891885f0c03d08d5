"""Which nodes a strongly typed fp16 engine keeps in fp32, decided from the calibration data's measured ranges.

TensorRT 11 builds every network strongly typed: each tensor runs in the type the ONNX gives it. edgec types the
float parts fp16 except where fp16 is unsafe, by the rules of NVIDIA ModelOpt AutoCast (a node stays fp32 when a
value it reads or writes on the calibration data exceeds a threshold, 512 by default, far inside fp16's 65504 so
that the sums and products downstream keep headroom; a constant beyond fp16's range keeps its node fp32), plus
rules for what ranges cannot show. Pure functions on an in-memory graph; the measuring is the caller's.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

DATA_MAX = 512.0
"""AutoCast's default data_max: the largest |value| a node may read or write on the calibration data in fp16."""
FP16_MAX = 65504.0
BY_DATA = "values beyond data_max"
_FILL = float(np.finfo(np.float32).max)
_POOLING_PREFIX = "edgec_"


def finite_absmax(values: np.ndarray) -> float:
    """Largest |value| in `values`, leaving out NaN and fills.

    A fill is +-inf or +-3.4e38 (float32's extreme), what transformers adds to masked attention scores. It is not
    a range fp16 must hold: cast to fp16 it becomes +-inf, which an additive mask and softmax treat the same.
    """
    magnitudes = np.abs(np.asarray(values, dtype=np.float32))
    kept = magnitudes[magnitudes < _FILL]  # NaN compares false and drops out too
    return float(kept.max()) if kept.size else 0.0


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor the model declares (inputs, outputs, value_info, initializers)."""
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.output, *graph.value_info)}
    return types | {i.name: i.data_type for i in graph.initializer}


def prepare_for_typing(model: onnx.ModelProto) -> None:
    """Fold Constant nodes holding a tensor into initializers, so that constants are typed in one place; name every
    unnamed node (precision is decided per node name); sort the nodes topologically (ORT's quantizer appends its
    Q/DQ nodes at the end, and type inference reads the graph in order)."""
    graph = model.graph
    for i, node in enumerate(graph.node):
        node.name = node.name or f"{node.op_type}_edgec_{i}"
    for node in [n for n in graph.node if n.op_type == "Constant"]:
        if len(node.attribute) == 1 and node.attribute[0].name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
            graph.node.remove(node)
    ordered = _topological(graph)
    del graph.node[:]
    graph.node.extend(ordered)


def _topological(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The nodes in an order where each one follows the producers of its inputs (stable otherwise)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    remaining, ordered = list(graph.node), []
    while remaining:
        ready = [n for n in remaining if all(i in available for i in n.input)]
        if not ready:
            raise ValueError(f"graph has a cycle or an undefined input at node {remaining[0].name}")
        ordered += ready
        available.update(o for n in ready for o in n.output)
        placed = {id(n) for n in ready}
        remaining = [n for n in remaining if id(n) not in placed]
    return ordered


def fp32_nodes(model: onnx.ModelProto, absmax: dict[str, float], data_max: float = DATA_MAX) -> dict[str, str]:
    """Node name -> why it stays fp32 ("category: detail"). Every other node reading or writing floats runs in fp16.

    model: typed (tensor_types covers every tensor), Constant nodes folded into initializers.
    absmax: tensor name -> finite_absmax of its values on the calibration data, for node outputs and float inputs.
    Attention (Q.K^T, softmax, P.V) stays fp16 unless its values say otherwise: fp32 there would block
    TensorRT's fused attention kernels.
    """
    graph, types = model.graph, tensor_types(model)
    floats = {name for name, dtype in types.items() if dtype == TensorProto.FLOAT}
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer if i.name in floats}
    index_tensors = _index_arithmetic(graph, floats, constants)
    reasons: dict[str, str] = {}
    for node in graph.node:
        touched = [t for t in (*node.input, *node.output) if t in floats]
        if not touched:
            continue
        if reason := _fixed_reason(node, index_tensors):
            reasons[node.name] = reason
        elif big := [t for t in touched if t in constants and np.abs(constants[t]).max(initial=0) > FP16_MAX]:
            reasons[node.name] = f"constant beyond fp16's range: {big[0]}"
        elif big := [t for t in touched if absmax.get(t, 0.0) > data_max]:
            reasons[node.name] = (
                f"{BY_DATA}: |{big[0]}| reaches {absmax[big[0]]:.4g} on the calibration data (> {data_max:g})"
            )
    return _follow_quantization(graph, reasons)


def _fixed_reason(node: onnx.NodeProto, index_tensors: set[str]) -> str | None:
    """Reasons that need no measurement."""
    if node.op_type == "LayerNormalization":
        # Its mean and variance reductions overflow or lose the residual stream in fp16 (TensorRT#2564, #3101).
        return "LayerNormalization: its reductions run in fp32"
    if node.name.startswith(_POOLING_PREFIX):
        return "pooling tail: sums over tokens and the 1e-12 norm floor need fp32"
    if node.output and all(o in index_tensors for o in node.output):
        return "index arithmetic: computed from integer inputs (attention mask, positions), fp16 could shift it"
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        return "control flow: its subgraphs are not converted"
    return None


def _index_arithmetic(graph: onnx.GraphProto, floats: set[str], constants: dict[str, np.ndarray]) -> set[str]:
    """Float tensors computed only from integer tensors and scalar constants: attention masks built from
    attention_mask, relative position buckets. Cheap, and some end in a Cast back to integers."""
    found: set[str] = set()
    for node in graph.node:  # ONNX graphs are topologically sorted
        float_inputs = [i for i in node.input if i in floats]
        scalar_or_index = all(i in found or (i in constants and constants[i].size <= 1) for i in float_inputs)
        reads_integers = any(i and i not in floats for i in node.input)
        if scalar_or_index and (float_inputs or reads_integers):
            found.update(o for o in node.output if o in floats)
    return found


def _follow_quantization(graph: onnx.GraphProto, reasons: dict[str, str]) -> dict[str, str]:
    """A QuantizeLinear takes its input's precision (no Cast before it); a DequantizeLinear is fp32 when a consumer
    is (a Cast between it and its MatMul would block TensorRT's int8 fusion)."""
    made = {o: n for n in graph.node for o in n.output}
    used_by: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            used_by[name].append(node)
    outputs = {o.name for o in graph.output}
    result = dict(reasons)
    for node in graph.node:
        if node.op_type == "QuantizeLinear":
            producer = made.get(node.input[0])
            result.pop(node.name, None)
            if producer is None or producer.name in result:
                result[node.name] = "QuantizeLinear: takes its input's precision (fp32)"
    for node in graph.node:
        if node.op_type == "DequantizeLinear":
            result.pop(node.name, None)
            readers = used_by[node.output[0]]
            if node.output[0] in outputs or any(r.name in result for r in readers):
                result[node.name] = "DequantizeLinear: feeds an fp32 node"
    return result
