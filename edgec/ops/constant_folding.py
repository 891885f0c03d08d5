"""Input-independent subgraphs precomputed into initializers, each folded value within a size bound.

ONNX Runtime folds such subgraphs itself when a session loads a float graph, but not through a DequantizeLinear (it
keeps Q/DQ pairs for its int8 kernels). Static int8 puts Q/DQ on the MatMuls with a constant weight, so a MatMul whose
other input is also computed from constants would turn into DequantizeLinear -> float GEMM on every inference:
DeBERTa-v3's relative position table (LayerNorm of the position embeddings, (2 * position_buckets, hidden)) projected
by each layer's query and key weights is 24 such GEMMs of 512 x 768 x 768 in the base model, about 7 GMAC per run
against about 11 GMAC for the rest of the encoder at 128 tokens. Folding before quantization removes them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgec.ops.graph import reads

# A folded value is stored in the model file and held in memory while folding. DeBERTa's largest projected position
# table (v2-xxlarge: 512 positions x 1536 wide) is 3 MiB; a value past 16 MiB is a broadcast or a table built from a
# few constants (ConstantOfShape, Expand, Tile, Range), which would bloat the file for work that is cheap at run time.
# Over the bound its nodes stay in the graph, and weight_matmuls leaves a MatMul reading them in float, where ONNX
# Runtime folds it when a session loads.
MAX_FOLDED_BYTES = 16 * 2**20
# Integer inputs up to this many values are handed to shape inference as values: shapes, axes, slice bounds.
_SHAPE_LIKE = 64
# Nodes that give another value on every run.
_RANDOM = {
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
}
_SUBGRAPHS = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)


@dataclass(frozen=True)
class Folded:
    """What fold_constants did: values now initializers, the nodes removed, and the bytes the model gained."""

    values: int
    nodes: int
    bytes_added: int


def foldable(node: onnx.NodeProto) -> bool:
    """A standard ONNX op that onnx's reference evaluator can compute once: no contrib ops, randomness or subgraphs."""
    return (
        node.domain in ("", "ai.onnx")
        and node.op_type not in _RANDOM
        and not any(a.type in _SUBGRAPHS for a in node.attribute)
    )


def input_independent(model: onnx.ModelProto) -> set[str]:
    """Names of the values a foldable node computes from initializers and other such values alone: the same on every
    run, whatever the inputs (the graph's nodes are in topological order, as ONNX requires)."""
    graph = model.graph
    known = {i.name for i in graph.initializer} - {i.name for i in graph.input}  # an input may override a default
    found: set[str] = set()
    for node in graph.node:
        if foldable(node) and all(not name or name in known or name in found for name in node.input):
            found.update(node.output)
    return found


def fold_constants(model: onnx.ModelProto, max_bytes: int = MAX_FOLDED_BYTES) -> Folded:
    """Compute, in place, every input-independent value the rest of the graph reads and store it as an initializer;
    the nodes that computed only such values go, and so do initializers nothing reads any more.

    A node is computed only when shape inference bounds its outputs by `max_bytes` first, so neither the file nor the
    memory spent folding grows past that per value; what follows a node left out is left out too. Constant nodes the
    remaining graph reads stay as they are: they cost nothing at run time.
    """
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    opsets = {o.domain or "": o.version for o in model.opset_import if o.domain in ("", "ai.onnx")}
    overridable = {i.name for i in graph.input}
    initializers = {i.name: i for i in graph.initializer if i.name not in overridable}
    uses = Counter(name for node in graph.node for name in reads(node))
    outputs = {o.name for o in graph.output}
    values: dict[str, np.ndarray] = {}  # computed values a node may still read
    computed: dict[int, onnx.NodeProto] = {}  # by position in the graph
    read_outside: set[str] = set()  # computed values that a node left in the graph reads
    for index, node in enumerate(graph.node):
        inputs = [n for n in reads(node) if n]
        results = None
        if foldable(node) and all(n in values or n in initializers for n in inputs):
            feeds = {n: values[n] if n in values else numpy_helper.to_array(initializers[n]) for n in inputs}
            # A Constant is in the file already; anything else is bounded before it is computed.
            size = 0 if node.op_type == "Constant" else _inferred_bytes(node, feeds, opsets)
            if size is not None and size <= max_bytes:
                results = ReferenceEvaluator(node, opsets=opsets).run(None, feeds)
        if results is None:
            read_outside.update(n for n in inputs if n in values)
        else:
            values.update(zip(node.output, (np.asarray(r) for r in results)))
            computed[index] = node
        for name in inputs:  # a value read by computed nodes only is dropped after its last reader
            uses[name] -= 1
            if not uses[name] and name in values and name not in read_outside and name not in outputs:
                del values[name]
    kept = {n.output[0] for n in computed.values() if n.op_type == "Constant" and n.output[0] in read_outside}
    folded = sorted((read_outside | (outputs & values.keys())) - kept)
    for index in sorted((i for i, n in computed.items() if n.output[0] not in kept), reverse=True):
        del graph.node[index]  # by position: removing by value compares whole protos
    graph.initializer.extend(numpy_helper.from_array(values[name], name) for name in folded)
    dropped = _drop_unread_initializers(graph)
    return Folded(
        values=len(folded),
        nodes=len(computed) - len(kept),
        bytes_added=sum(values[name].nbytes for name in folded) - dropped,
    )


def _inferred_bytes(node: onnx.NodeProto, feeds: dict[str, np.ndarray], opsets: dict[str, int]) -> int | None:
    """The bytes of the node's outputs by onnx's shape inference, before computing them; None where it cannot tell.

    Small integer inputs go in as values (a Reshape's shape, a Slice's bounds, an Expand's target), the rest as shapes.
    """
    small = {n: v for n, v in feeds.items() if v.dtype.kind in "iub" and v.size <= _SHAPE_LIKE}
    declared = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
        for n, v in feeds.items()
        if n not in small
    ]
    probe = helper.make_model(
        helper.make_graph([node], "probe", declared, [], [numpy_helper.from_array(v, n) for n, v in small.items()]),
        opset_imports=[helper.make_opsetid(domain, version) for domain, version in opsets.items()],
    )
    try:
        inferred = onnx.shape_inference.infer_shapes(probe, strict_mode=True, data_prop=True)
    except onnx.shape_inference.InferenceError:
        return None
    types = {v.name: v.type.tensor_type for v in inferred.graph.value_info}
    total = 0
    for name in node.output:
        tensor = types.get(name)
        if tensor is None or not tensor.HasField("shape") or tensor.elem_type == onnx.TensorProto.STRING:
            return None
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        if min(dims, default=0) < 0:
            return None
        total += int(np.prod(dims)) * helper.tensor_dtype_to_np_dtype(tensor.elem_type).itemsize
    return total


def _drop_unread_initializers(graph: onnx.GraphProto) -> int:
    """Remove initializers no node, graph output or input reads; returns their bytes."""
    read = {name for node in graph.node for name in reads(node)} | {o.name for o in graph.output}
    read |= {i.name for i in graph.input}
    unread = [index for index, i in enumerate(graph.initializer) if i.name not in read]
    dropped = 0
    for index in reversed(unread):
        tensor = graph.initializer[index]
        dropped += int(np.prod(tensor.dims)) * helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        del graph.initializer[index]
    return dropped
