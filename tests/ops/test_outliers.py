"""Outlier channels of a MatMul input: found on calibration rows, computed in float, the rest left to int8."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgec.ops.calibration import activation_range, matmul_quantization_error
from edgec.ops.outliers import SUFFIX, outlier_channels, split_outlier_channels


def _rows(seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(4000, 512)).astype(np.float32)
    rows[::50, 7] = 80.0  # a few tokens, one channel: a massive activation
    rows[:, 300] *= 20.0  # one channel large everywhere
    return rows


def _outliers(rows: np.ndarray, **kwargs) -> np.ndarray:
    return outlier_channels(np.abs(rows).max(axis=0), rows, **kwargs)


def test_only_channels_that_dwarf_the_bulk_are_outliers():
    assert sorted(_outliers(_rows()).tolist()) == [7, 300]
    assert _outliers(np.random.default_rng(1).normal(size=(4000, 512))).size == 0
    assert _outliers(_rows(), limit=1).tolist() == [7]
    rows = _rows()
    assert sorted(outlier_channels(np.abs(rows).max(axis=0), rows[1::50]).tolist()) == [7, 300], (
        "the peaks of every token with the bulk's level from a sample (row 0 of each 50, the spikes, left out)"
    )


def test_splitting_them_off_cuts_the_int8_error():
    rows, w = _rows(), np.random.default_rng(2).normal(size=(512, 64)).astype(np.float32)
    channels = _outliers(rows)
    whole = matmul_quantization_error(rows, w, activation_range(rows, "minmax"), signed=False, per_channel=True)
    kept = np.delete(rows, channels, axis=1)
    split = matmul_quantization_error(
        rows, w, activation_range(kept, "minmax"), signed=False, per_channel=True, outliers=channels
    )
    assert split < whole / 5


def _model(join: str) -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.normal(size=(16, 8)).astype(np.float32), "w")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")]
    if join == "sum":
        nodes.append(helper.make_node("Sum", ["y", "x8"], ["out"], name="residual"))
    else:
        nodes.append(helper.make_node("Relu", ["y"], ["out"], name="act"))
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16]),
        helper.make_tensor_value_info("x8", TensorProto.FLOAT, ["n", 8]),
    ]
    graph = helper.make_graph(
        nodes, "g", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 8])], inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def test_the_split_graph_computes_the_same_in_float_and_joins_a_residual_sum():
    feeds = {"x": np.random.default_rng(4).normal(size=(5, 16)).astype(np.float32), "x8": np.ones((5, 8), np.float32)}
    for join in ("sum", "other"):
        model = _model(join)
        before = _run(model, feeds)
        split_outlier_channels(model, model.graph.node[0], np.array([3, 11]))
        ops = [n.op_type for n in model.graph.node]
        assert ops.count("MatMul") == 2 and "Gather" in ops and any(n.name.endswith(SUFFIX) for n in model.graph.node)
        assert ("Add" in ops) == (join != "sum"), "a residual Sum takes the float part as one more input"
        weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        assert not weights[model.graph.node[0].input[1]][[3, 11]].any(), (
            "the int8 MatMul's weight rows of the outliers are zero"
        )
        np.testing.assert_allclose(_run(model, feeds), before, rtol=1e-5, atol=1e-5)
