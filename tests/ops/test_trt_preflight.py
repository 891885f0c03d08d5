from __future__ import annotations

import logging
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.ops.trt_preflight import TRT_SUPPORTED_OPS, TRT_UNSUPPORTED_OPS, Hazard, preflight

VARIED = {"x": (0, 1)}


def _model(nodes, inputs, outputs, initializers=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def _float(name, shape=("batch", "seq", 8)):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _errors(hazards: list[Hazard]) -> list[Hazard]:
    return [h for h in hazards if h.severity == "error"]


def _warnings(hazards: list[Hazard]) -> list[Hazard]:
    return [h for h in hazards if h.severity == "warning"]


def _clean() -> onnx.ModelProto:
    """One attention-ish block on float data with dynamic batch and sequence, as a fuse = false export has."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.normal(size=(16, 8)).astype(np.float32), "table"),
        numpy_helper.from_array(rng.normal(size=(8, 8)).astype(np.float32), "W"),
        numpy_helper.from_array(np.ones(8, np.float32), "gamma"),
        numpy_helper.from_array(np.zeros(8, np.float32), "beta"),
    ]
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"], name="embed"),
        helper.make_node("MatMul", ["emb", "W"], ["proj"], name="proj"),
        helper.make_node("Add", ["proj", "emb"], ["joined"], name="residual"),
        helper.make_node("LayerNormalization", ["joined", "gamma", "beta"], ["normed"], name="norm", axis=-1),
        helper.make_node("Erf", ["normed"], ["erf"], name="erf"),
        helper.make_node("Softmax", ["erf"], ["y"], name="softmax", axis=-1),
    ]
    ids = helper.make_tensor_value_info("ids", TensorProto.INT32, ["batch", "seq"])
    return _model(nodes, [ids], [_float("y")], weights)


def test_clean_transformer_graph_has_no_hazards():
    assert preflight(_clean(), {"ids": (0, 1)}) == []


def test_contrib_nodes_are_one_grouped_error_naming_the_op_and_count():
    nodes = [
        helper.make_node("FastGelu", [f"t{i}"], [f"t{i + 1}"], name=f"gelu{i}", domain="com.microsoft")
        for i in range(5)
    ]
    hazards = preflight(_model(nodes, [_float("t0")], [_float("t5")]), {"t0": (0, 1)})
    assert len(hazards) == 1
    (error,) = _errors(hazards)
    assert "5 nodes" in error.what and "'FastGelu'" in error.what and "com.microsoft" in error.what
    assert "'gelu0', 'gelu1', 'gelu2' and 2 more" in error.what
    assert "fuse = false" in error.fix


def test_contrib_op_is_an_error_even_where_a_standard_op_shares_its_name():
    # ONNX Runtime's fused com.microsoft Attention is not the opset-23 Attention TensorRT parses.
    nodes = [helper.make_node("Attention", ["x"], ["y"], name="attn", domain="com.microsoft")]
    (error,) = _errors(preflight(_model(nodes, [_float("x")], [_float("y")]), VARIED))
    assert "'Attention' (domain com.microsoft)" in error.what


def test_op_the_matrix_marks_unsupported_is_an_error():
    # MatMulInteger: what ONNX Runtime's dynamic int8 quantization writes; TensorRT 10 lists it as "N".
    assert "MatMulInteger" in TRT_UNSUPPORTED_OPS and "MatMulInteger" not in TRT_SUPPORTED_OPS
    nodes = [helper.make_node("MatMulInteger", ["a", "b"], ["y"], name="qmm")]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT8, ["batch", 4]) for n in ("a", "b")]
    output = helper.make_tensor_value_info("y", TensorProto.INT32, ["batch", 4])
    (error,) = _errors(preflight(_model(nodes, inputs, [output]), {}))
    assert "1 node uses op 'MatMulInteger'" in error.what and "lists as unsupported" in error.what


def test_op_missing_from_the_matrix_is_an_error_too():
    nodes = [helper.make_node("NoSuchOp", ["x"], ["y"], name="odd")]
    (error,) = _errors(preflight(_model(nodes, [_float("x")], [_float("y")]), VARIED))
    assert "'NoSuchOp'" in error.what and "does not know" in error.what


def test_contrib_op_inside_an_if_branch_is_found():
    branch = helper.make_graph(
        [helper.make_node("Gelu", ["x"], ["z"], domain="com.microsoft", name="inner")], "then", [], [_float("z")]
    )
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["w"])], "else", [], [_float("w")])
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    node = helper.make_node("If", ["c"], ["y"], name="branch", then_branch=branch, else_branch=other)
    hazards = preflight(_model([node], [_float("x"), cond], [_float("y")]), VARIED)
    assert any("'Gelu'" in h.what and "'inner'" in h.what for h in _errors(hazards))
    assert any("op 'If'" in h.what for h in _warnings(hazards))


def test_double_input_is_an_error():
    x = helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["batch", "seq"])
    y = helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["batch", "seq"])
    (error,) = _errors(preflight(_model([helper.make_node("Relu", ["x"], ["y"])], [x], [y]), VARIED))
    assert "2 tensors are DOUBLE" in error.what and "'x'" in error.what and "'y'" in error.what


def test_inner_double_is_a_warning_and_uint32_an_error():
    nodes = [
        helper.make_node("Cast", ["x"], ["d"], to=TensorProto.DOUBLE),
        helper.make_node("Cast", ["d"], ["u"], to=TensorProto.UINT32),
        helper.make_node("Cast", ["u"], ["y"], to=TensorProto.FLOAT),
    ]
    hazards = preflight(_model(nodes, [_float("x")], [_float("y")]), VARIED)
    assert [h.what for h in _errors(hazards)] == ["1 tensor is UINT32, a type TensorRT has no tensors of (e.g. 'u')."]
    assert any("1 inner tensor is DOUBLE" in h.what for h in _warnings(hazards))


def test_int64_inputs_and_initializers_are_warnings():
    shift = numpy_helper.from_array(np.array([1], np.int64), "one")
    nodes = [
        helper.make_node("Add", ["input_ids", "one"], ["a"]),
        helper.make_node("Add", ["a", "attention_mask"], ["y"]),
    ]
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in ("input_ids", "attention_mask")
    ]
    output = helper.make_tensor_value_info("y", TensorProto.INT64, ["batch", "seq"])
    varied = {"input_ids": (0, 1), "attention_mask": (0, 1)}
    hazards = preflight(_model(nodes, inputs, [output], [shift]), varied)
    assert _errors(hazards) == []
    whats = [h.what for h in _warnings(hazards)]
    assert any(w.startswith("2 graph inputs are int64") and "'input_ids'" in w for w in whats)
    assert any(w.startswith("1 initializer is int64") and "'one'" in w for w in whats)


def test_initializers_listed_as_inputs_count_as_initializers():
    # IR < 4 exports list every initializer among the graph inputs too.
    model = _clean()
    model.graph.input.extend([helper.make_tensor_value_info("steps", TensorProto.INT64, [1])])
    model.graph.initializer.extend([numpy_helper.from_array(np.array([1], np.int64), "steps")])
    whats = [h.what for h in preflight(model, {"ids": (0, 1)})]
    assert whats == ["1 initializer is int64 (e.g. 'steps'): the parser casts them to int32 where a layer lacks int64."]


def test_fixed_sequence_length_on_a_varied_axis_is_an_error_naming_input_and_axis():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 128, 8])
    (error,) = _errors(preflight(_model([helper.make_node("Relu", ["x"], ["y"])], [x], [_float("y")]), VARIED))
    assert "'x'" in error.what and "axis 1" in error.what and "128" in error.what
    assert "dynamic" in error.fix


def test_dynamic_dims_give_no_shape_error_and_profile_names_are_checked():
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [_float("x")], [_float("y")])
    assert preflight(model, VARIED) == []
    whats = [h.what for h in _errors(preflight(model, {"ids": (0,), "x": (3,)}))]
    assert whats == [
        "The optimization profile varies axis 3 of input 'x', which has rank 3.",
        "The optimization profile varies input 'ids', which the graph lacks.",
    ]


@pytest.mark.parametrize(("target", "flagged"), [((2, 64, 8), True), ((-1, 64, 8), False), ((0, 0, 8), False)])
def test_fixed_reshape_after_a_varied_input_is_a_warning(target, flagged):
    shape = numpy_helper.from_array(np.array(target, np.int64), "shape")
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Reshape", ["r", "shape"], ["y"], name="pin")]
    hazards = preflight(_model(nodes, [_float("x")], [_float("y")], [shape]), VARIED)
    pinned = [h for h in _warnings(hazards) if "Reshape" in h.what]
    assert bool(pinned) is flagged
    if flagged:
        assert "'pin'" in pinned[0].what and "batch or sequence" in pinned[0].what


def test_fixed_reshape_of_a_constant_is_not_flagged():
    table = numpy_helper.from_array(np.zeros((4, 2), np.float32), "table")
    shape = helper.make_node("Constant", [], ["shape"], value=numpy_helper.from_array(np.array([8], np.int64)))
    nodes = [shape, helper.make_node("Reshape", ["table", "shape"], ["flat"], name="flat")]
    flat = helper.make_tensor_value_info("flat", TensorProto.FLOAT, [8])
    assert not any("Reshape" in h.what for h in preflight(_model(nodes, [_float("x")], [flat], [table]), VARIED))


def test_nonzero_is_a_data_dependent_warning():
    nodes = [helper.make_node("NonZero", ["x"], ["idx"], name="where")]
    idx = helper.make_tensor_value_info("idx", TensorProto.INT64, [3, "n"])
    (warning,) = [h for h in _warnings(preflight(_model(nodes, [_float("x")], [idx]), VARIED)) if "NonZero" in h.what]
    assert "'where'" in warning.what and "depend on the data" in warning.what


def test_old_opset_is_a_warning_and_hazards_are_sorted():
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("FastGelu", ["y"], ["z"], domain="com.microsoft")]
    hazards = preflight(_model(nodes, [_float("x")], [_float("z")], opset=13), VARIED)
    assert [h.severity for h in hazards] == ["error", "warning"]
    assert hazards[1].what == "The model uses ONNX opset 13, below 17."
    assert hazards == sorted(hazards, key=lambda h: (h.severity != "error", h.what))


@pytest.mark.slow
def test_exported_tiny_bert_has_no_errors(tiny_models, tmp_path):
    from optimum.exporters.onnx import onnx_export_from_model
    from transformers import AutoModel

    model = AutoModel.from_pretrained(tiny_models("bert"))
    logging.getLogger("optimum").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_export_from_model(model, tmp_path, task="feature-extraction", opset=17, do_validation=False)
    exported = onnx.load(str(tmp_path / "model.onnx"))
    varied = {i.name: (0, 1) for i in exported.graph.input}
    hazards = preflight(exported, varied)
    assert _errors(hazards) == [], hazards
    assert any("graph inputs are int64" in h.what for h in hazards)

    from onnxruntime.transformers.optimizer import optimize_model

    fused = optimize_model(str(tmp_path / "model.onnx"), model_type="bert", num_heads=4, hidden_size=32).model
    assert any("'SkipLayerNormalization' (domain com.microsoft)" in h.what for h in _errors(preflight(fused, varied)))
