"""Graph rewrites for fp16: type a graph's float parts fp16 for a strongly typed engine, and show fp16's rounding
on ONNX Runtime's CPU provider, which has no fp16 kernels for MatMul, Add, Softmax or Erf and silently computes
them in fp32 (so an fp16 graph run there shows almost none of fp16's rounding). Pure functions, no I/O."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgec.ops.mixed_precision import tensor_types

_FLOAT, _HALF = TensorProto.FLOAT, TensorProto.FLOAT16


def to_fp16(model: onnx.ModelProto, keep_fp32: set[str]) -> onnx.ModelProto:
    """A copy of `model` in which the float tensors of every node outside `keep_fp32` are fp16.

    Casts join the two precisions, one per tensor and direction; graph inputs and outputs keep their types.
    Constants read only by fp16 nodes are stored fp16, those read in both precisions get an fp16 copy. A node
    whose `to` attribute says float (Cast) says float16 instead. value_info is dropped: infer it again.
    model: every tensor typed (mixed_precision.tensor_types), Constant nodes folded into initializers.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    floats = {n for n, t in tensor_types(out).items() if t == _FLOAT}
    half_nodes = {n.name for n in graph.node if n.name not in keep_fp32}
    made_half = {o for n in graph.node if n.name in half_nodes for o in n.output if o in floats}
    graph_outputs = {o.name for o in graph.output}
    initializers = {i.name: i for i in graph.initializer if i.name in floats}
    readers: dict[str, set[bool]] = defaultdict(set)  # tensor -> {read in fp16?}
    for node in graph.node:
        for name in node.input:
            readers[name].add(node.name in half_nodes)
    casts: dict[str, onnx.NodeProto] = {}  # cast output name -> the Cast
    pending: list[onnx.NodeProto] = []  # Casts made for the node being rewritten, emitted just before it

    def cast(source: str, target: str, to: int) -> str:
        if target not in casts:
            casts[target] = helper.make_node("Cast", [source], [target], name=f"{target}_edgec_cast", to=to)
            pending.append(casts[target])
        return target

    def half_name(tensor: str) -> str:
        if tensor in initializers:
            if readers[tensor] == {True}:
                _store_half(initializers[tensor], tensor)
                return tensor
            if f"{tensor}_fp16" not in initializers:
                copy = onnx.TensorProto()
                _store_half(copy, f"{tensor}_fp16", initializers[tensor])
                initializers[copy.name] = copy
                graph.initializer.append(copy)
            return f"{tensor}_fp16"
        if tensor in made_half:
            return f"{tensor}_fp16" if tensor in graph_outputs else tensor
        return cast(tensor, f"{tensor}_fp16", _HALF)

    def float_name(tensor: str) -> str:
        if tensor in made_half and tensor not in graph_outputs:
            return cast(tensor, f"{tensor}_fp32", _FLOAT)
        return tensor

    nodes = []
    for node in graph.node:
        half = node.name in half_nodes
        for i, name in enumerate(node.input):
            if name in floats:
                node.input[i] = half_name(name) if half else float_name(name)
        nodes += pending
        pending.clear()
        nodes.append(node)
        if half:
            _retype_attributes(node, _FLOAT, _HALF)
            for i, name in enumerate(node.output):
                if name in graph_outputs and name in floats:
                    node.output[i] = f"{name}_fp16"
                    nodes.append(
                        helper.make_node("Cast", [node.output[i]], [name], name=f"{name}_edgec_cast", to=_FLOAT)
                    )
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    return out


def fp16_rounding_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """The fp32 graph that rounds like `model`'s fp16 tensors, for ONNX Runtime's CPU provider.

    Every fp16 tensor becomes fp32 and passes through an explicit fp32 -> fp16 -> fp32 Cast pair where it is
    made (such pairs survive ORT's graph optimizer), so each node computes in fp32 and its result is rounded to
    fp16 as the engine stores it. fp16 constants become the same values in fp32. model: every tensor typed.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    halves = {n for n, t in tensor_types(out).items() if t == _HALF}
    for tensor in graph.initializer:
        if tensor.data_type == _HALF:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name))
    for value in (*graph.input, *graph.output):
        if value.type.tensor_type.elem_type == _HALF:
            value.type.tensor_type.elem_type = _FLOAT
    nodes = []
    for node in graph.node:
        _retype_attributes(node, _HALF, _FLOAT)
        nodes.append(node)
        for i, name in enumerate(node.output):
            if name in halves:
                node.output[i] = f"{name}_unrounded"
                nodes += [
                    helper.make_node("Cast", [node.output[i]], [f"{name}_as_fp16"], name=f"{name}_to_fp16", to=_HALF),
                    helper.make_node("Cast", [f"{name}_as_fp16"], [name], name=f"{name}_from_fp16", to=_FLOAT),
                ]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    return out


def _store_half(tensor: onnx.TensorProto, name: str, source: onnx.TensorProto | None = None) -> None:
    values = numpy_helper.to_array(source if source is not None else tensor)
    tensor.CopyFrom(numpy_helper.from_array(values.astype(np.float16), name))


def _retype_attributes(node: onnx.NodeProto, old: int, new: int) -> None:
    """A Cast's `to` and tensor-valued attributes (ConstantOfShape's value) of type `old` take type `new`."""
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.INT and attribute.name == "to" and attribute.i == old:
            attribute.i = new
        elif attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type == old:
            values = numpy_helper.to_array(attribute.t).astype(onnx.helper.tensor_dtype_to_np_dtype(new))
            attribute.t.CopyFrom(numpy_helper.from_array(values, attribute.t.name))
