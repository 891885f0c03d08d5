"""Sentence pooling as ONNX nodes: appended to an exported encoder so the artifact emits embeddings."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class _GraphTail:
    """Appends named nodes and constants to a graph; every name carries an `edgec_` prefix."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph, self.nodes, self.constants = graph, [], {}

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        name = f"edgec_{name}"
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def const(self, name: str, value) -> str:
        name = f"edgec_{name}"
        if name not in self.constants:
            self.constants[name] = numpy_helper.from_array(np.asarray(value), name)
        return name

    def reduce(self, op: str, data: str, name: str, opset: int, axis: int) -> str:
        # ReduceSum takes axes as an input from opset 13, ReduceMax only from opset 18.
        keepdims = int(axis == -1)
        if op == "ReduceSum" or opset >= 18:
            return self.node(op, [data, self.const(f"axes{axis}", np.array([axis], np.int64))], name, keepdims=keepdims)
        return self.node(op, [data], name, axes=[axis], keepdims=keepdims)

    def commit(self) -> None:
        self.graph.initializer.extend(self.constants.values())
        self.graph.node.extend(self.nodes)


def append_pooling(
    model: onnx.ModelProto,
    *,
    hidden: str,
    mask: str,
    mode: str,
    normalize: bool,
    output: str,
    keep_hidden: bool = False,
) -> None:
    """Replace the graph's outputs with `output` = pool(hidden (batch, seq, dim), mask (batch, seq)), followed by
    `hidden` itself where `keep_hidden` (the token states, for runtimes that pool on their own).

    Mirrors sentence-transformers: masked mean (token count clamped at 1e-9), first token, or masked max;
    then optionally x / max(||x||, 1e-12).
    """
    tail, opset = _GraphTail(model.graph), next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    mask_f = tail.node("Cast", [mask], "mask_f", to=TensorProto.FLOAT)
    mask3 = tail.node(
        "Unsqueeze", [mask_f, tail.const("axis_last", np.array([-1], np.int64))], "mask3"
    )  # (batch, seq, 1)
    if mode == "mean":
        summed = tail.reduce("ReduceSum", tail.node("Mul", [hidden, mask3], "masked"), "sum", opset, axis=1)
        count = tail.reduce("ReduceSum", mask3, "count_raw", opset, axis=1)
        count = tail.node("Max", [count, tail.const("eps_count", np.float32(1e-9))], "count")
        pooled = tail.node("Div", [summed, count], "mean")
    elif mode == "cls":
        first = tail.node("Gather", [hidden, tail.const("zero", np.array(0, np.int64))], "cls", axis=1)
        pooled = first  # a scalar index drops the sequence axis: (batch, dim)
    elif mode == "max":
        # Padding positions get -1e9 so they never win: hidden + (mask - 1) * 1e9.
        shifted = tail.node("Sub", [mask3, tail.const("one", np.float32(1.0))], "mask_minus_one")
        offset = tail.node("Mul", [shifted, tail.const("big", np.float32(1e9))], "offset")
        pooled = tail.reduce("ReduceMax", tail.node("Add", [hidden, offset], "max_in"), "max", opset, axis=1)
    else:
        raise ValueError(f"unknown pooling mode {mode!r}")
    if normalize:
        squares = tail.reduce("ReduceSum", tail.node("Mul", [pooled, pooled], "squares"), "square_sum", opset, axis=-1)
        norm = tail.node(
            "Max", [tail.node("Sqrt", [squares], "norm_raw"), tail.const("eps_norm", np.float32(1e-12))], "norm"
        )
        pooled = tail.node("Div", [pooled, norm], "normalized")
    tail.nodes.append(helper.make_node("Identity", [pooled], [output], name="edgec_output"))
    tail.commit()
    dim = _last_dim(model.graph, hidden)
    token_states = [o for o in model.graph.output if o.name == hidden and keep_hidden]
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch_size", dim]))
    model.graph.output.extend(token_states)


def _last_dim(graph: onnx.GraphProto, name: str) -> int | str:
    for value in (*graph.output, *graph.value_info):
        if value.name == name:
            dim = value.type.tensor_type.shape.dim[-1]
            return dim.dim_value if dim.HasField("dim_value") else dim.dim_param
    return "hidden_size"
