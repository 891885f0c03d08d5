"""Constant folding on small graphs: what is computed once, what stays, and the size bound."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgec.ops.constant_folding import fold_constants, input_independent

RNG = np.random.default_rng(0)


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _position_graph(extra_nodes=(), extra_inits=(), outputs=("y",)):
    """DeBERTa's shape in small: a position table, normalized and projected by a weight the input also goes
    through, then multiplied with the projected input (an activation x activation product)."""
    nodes = [
        helper.make_node("LayerNormalization", ["table", "gamma", "beta"], ["table_norm"], axis=-1),
        helper.make_node("MatMul", ["table_norm", "w"], ["table_proj"]),
        helper.make_node("Add", ["table_proj", "b"], ["pos_key"]),
        helper.make_node("Transpose", ["pos_key"], ["pos_key_t"], perm=[1, 0]),
        helper.make_node("MatMul", ["x", "w"], ["query"]),
        helper.make_node("MatMul", ["query", "pos_key_t"], ["y"]),
        *extra_nodes,
    ]
    inits = [
        _init("table", RNG.normal(size=(6, 8)).astype(np.float32)),
        _init("gamma", np.ones(8, np.float32)),
        _init("beta", np.zeros(8, np.float32)),
        _init("w", RNG.normal(size=(8, 8)).astype(np.float32)),
        _init("b", RNG.normal(size=8).astype(np.float32)),
        *extra_inits,
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", 6]) for name in outputs],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def test_the_position_projection_is_computed_once_and_the_outputs_stay():
    model = _position_graph()
    x = RNG.normal(size=(5, 8)).astype(np.float32)
    expected = _run(model, x)
    assert {"table_norm", "table_proj", "pos_key", "pos_key_t"} <= input_independent(model)
    assert not {"query", "y"} & input_independent(model)
    folded = fold_constants(model)
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["MatMul", "MatMul"], "only the input's work is left"
    assert folded.nodes == 4 and folded.values == 1
    initializers = {i.name for i in model.graph.initializer}
    assert "pos_key_t" in initializers and not {"table", "gamma", "beta", "b"} & initializers  # unread ones go
    assert "w" in initializers, "the input's projection still reads the weight"
    assert folded.bytes_added == 6 * 8 * 4 - (6 * 8 + 8 + 8 + 8) * 4
    np.testing.assert_allclose(_run(model, x)[0], expected[0], rtol=1e-5, atol=1e-5)


def test_a_value_over_the_bound_is_neither_computed_nor_kept_and_nor_is_what_follows_it():
    # Expand broadcasts the table to (1000, 6, 8): 192 KB from a 192-byte table, summed back to (6,)
    big = [
        helper.make_node("Expand", ["table", "big_shape"], ["table_big"]),
        helper.make_node("ReduceSum", ["table_big", "axis0"], ["table_sum"], keepdims=0),
        helper.make_node("Add", ["y", "table_sum"], ["z"]),
    ]
    shape = [_init("big_shape", np.array([1000, 6, 8], np.int64)), _init("axis0", np.array([0, 2], np.int64))]
    model = _position_graph(big, shape, outputs=("z",))
    x = RNG.normal(size=(3, 8)).astype(np.float32)
    expected = _run(model, x)
    fold_constants(model, max_bytes=100_000)
    ops = [n.op_type for n in model.graph.node]
    assert "Expand" in ops and "ReduceSum" in ops, "over the bound: left for the runtime"
    assert "LayerNormalization" not in ops, "under the bound: folded"
    assert "table" in {i.name for i in model.graph.initializer}, "the Expand still reads the table"
    np.testing.assert_allclose(_run(model, x)[0], expected[0], rtol=1e-5, atol=1e-4)


def test_an_initializer_that_is_also_an_input_is_not_a_constant():
    model = _position_graph()
    model.graph.input.append(helper.make_tensor_value_info("table", TensorProto.FLOAT, [6, 8]))
    assert "table_norm" not in input_independent(model)
    assert fold_constants(model).nodes == 0


def test_random_ops_and_contrib_ops_stay():
    nodes = [
        helper.make_node("RandomNormal", [], ["noise"], shape=[8]),
        helper.make_node("Add", ["x", "noise"], ["x_noisy"]),
        helper.make_node("FastGelu", ["b"], ["b_gelu"], domain="com.microsoft"),
        helper.make_node("Add", ["x_noisy", "b_gelu"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
        [_init("b", np.ones(8, np.float32))],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    assert not input_independent(model)
    assert fold_constants(model).nodes == 0 and len(model.graph.node) == 4


def test_a_constant_a_subgraph_reads_from_the_outer_graph_stays():
    then_branch = helper.make_graph(
        [helper.make_node("Add", ["x", "scaled"], ["then_out"])],
        "then",
        [],
        [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, [8])],
    )
    else_branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["else_out"])],
        "else",
        [],
        [helper.make_tensor_value_info("else_out", TensorProto.FLOAT, [8])],
    )
    nodes = [
        helper.make_node("Mul", ["b", "b"], ["scaled"]),
        helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
        helper.make_node("Greater", ["total", "zero"], ["positive"]),
        helper.make_node("If", ["positive"], ["y"], then_branch=then_branch, else_branch=else_branch),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8])],
        [_init("b", np.full(8, 2.0, np.float32)), _init("zero", np.array(0.0, np.float32))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.ones(8, np.float32)
    fold_constants(model)
    onnx.checker.check_model(model)
    assert "scaled" in {i.name for i in model.graph.initializer}, "folded, and kept for the If branch that reads it"
    np.testing.assert_allclose(_run(model, x)[0], x + 4.0)
