import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgec.ops.graph import quantize_embedding_tables, residual_adds_to_sum, scale_matmul_inputs
from edgec.ops.smoothing import smoothing_scales


def _block() -> onnx.ModelProto:
    """y = LayerNorm(x @ W + b + x): one projection with its residual join, as exporters write it."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.normal(size=(8, 8)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.normal(size=8).astype(np.float32), "b"),
        numpy_helper.from_array(np.ones(8, np.float32), "gamma"),
        numpy_helper.from_array(np.zeros(8, np.float32), "beta"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["proj"], name="proj"),
        helper.make_node("Add", ["b", "proj"], ["biased"], name="bias"),
        helper.make_node("Add", ["biased", "x"], ["joined"], name="residual"),
        helper.make_node("LayerNormalization", ["joined", "gamma", "beta"], ["y"], name="norm", axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
        weights,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_residual_join_becomes_one_sum_with_the_same_output():
    model, x = _block(), np.random.default_rng(1).normal(size=(5, 8)).astype(np.float32)
    before = _run(model, x)
    assert residual_adds_to_sum(model) == 1
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Sum", "LayerNormalization"]
    assert sorted(model.graph.node[1].input) == sorted(["proj", "b", "x"])
    np.testing.assert_allclose(_run(model, x), before, rtol=1e-5, atol=1e-5)


def test_input_scaling_keeps_the_product():
    model, x = _block(), np.random.default_rng(2).normal(size=(5, 8)).astype(np.float32)
    before = _run(model, x)
    matmul = model.graph.node[0]
    scale_matmul_inputs(model, {"x": [matmul]}, {"x": np.linspace(0.5, 4, 8).astype(np.float32)})
    assert model.graph.node[0].op_type == "Mul" and matmul.input[0] == "x_edgec_smoothed"
    np.testing.assert_allclose(_run(model, x), before, rtol=1e-4, atol=1e-4)


def test_smoothing_evens_out_outlier_channels():
    activation = np.array([100.0, 1.0, 1.0, 1.0])
    weight = np.array([0.1, 0.1, 0.1, 0.1])
    s = smoothing_scales(activation, weight, alpha=0.8)
    smoothed = activation / s
    assert smoothed.max() / smoothed.min() < activation.max() / activation.min()
    np.testing.assert_allclose(smoothing_scales(activation, weight, alpha=1.0), activation, rtol=1e-6)


def test_embedding_tables_are_stored_int8_per_row_and_dequantized_after_the_lookup():
    rng = np.random.default_rng(3)
    table = rng.normal(size=(50, 8)).astype(np.float32)
    table[7] *= 100  # an outlier row must not cost the other rows their precision
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"], name="lookup")],
        "emb",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["b", "s", 8])],
        [numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    saved = quantize_embedding_tables(model, [model.graph.node[0]])
    assert saved == table.nbytes - table.size - 50 * 4  # float32 table -> int8 table + one float32 scale per row
    stored = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert stored["table_int8"].dtype == np.int8 and stored["table_row_scale"].shape == (50, 1)
    ids = np.array([[0, 7, 49], [3, 3, 1]], dtype=np.int64)
    rows = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[
        0
    ]
    expected = table[ids]
    peak = np.abs(expected).max(axis=-1, keepdims=True)
    assert np.all(np.abs(rows - expected) <= peak / 127 / 2 + 1e-6)
