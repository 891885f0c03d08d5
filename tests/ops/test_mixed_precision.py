"""fp16 typing for strongly typed engines: which nodes stay fp32, the typed graph, and the CPU model of fp16 rounding."""

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.ops.fp16_graph import fp16_rounding_model, to_fp16
from edgec.ops.mixed_precision import finite_absmax, fp32_nodes, prepare_for_typing, tensor_types
from edgec.targets import SessionSettings

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16


def _attention_like(scale: float) -> onnx.ModelProto:
    """x (batch, 4) float, mask (batch, 4) int64 -> probs = softmax(x W + (1 - mask) * -3.4e38) and
    pooled = edgec_output(LayerNorm(x W * scale)): a mask built from integers, attention-like math, a node whose
    values grow with `scale`, LayerNorm and a pooling tail."""
    rng = np.random.default_rng(0)
    const = lambda name, value: numpy_helper.from_array(np.asarray(value, np.float32), name)  # noqa: E731
    nodes = [
        helper.make_node("Cast", ["mask"], ["mask_f"], name="mask_cast", to=FLOAT),
        helper.make_node("Sub", ["one", "mask_f"], ["inverted"], name="mask_sub"),
        helper.make_node("Mul", ["inverted", "lowest"], ["additive_mask"], name="mask_mul"),
        helper.make_node("MatMul", ["x", "w"], ["scores"], name="scores_matmul"),
        helper.make_node("Add", ["scores", "additive_mask"], ["masked"], name="mask_add"),
        helper.make_node("Softmax", ["masked"], ["probs"], name="softmax", axis=-1),
        helper.make_node("Mul", ["scores", "scale"], ["grown"], name="grow"),
        helper.make_node("LayerNormalization", ["grown", "gamma", "beta"], ["normed"], name="norm", axis=-1),
        helper.make_node("Identity", ["normed"], ["pooled"], name="edgec_output"),
    ]
    graph = helper.make_graph(
        nodes,
        "attention_like",
        [
            helper.make_tensor_value_info("x", FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", 4]),
        ],
        [
            helper.make_tensor_value_info("probs", FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("pooled", FLOAT, ["batch", 4]),
        ],
        [
            const("one", 1.0),
            const("lowest", np.finfo(np.float32).min),
            const("w", rng.normal(size=(4, 4))),
            const("scale", scale),
            const("gamma", np.ones(4)),
            const("beta", np.zeros(4)),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    prepare_for_typing(model)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _feeds():
    rng = np.random.default_rng(1)
    mask = np.ones((8, 4), np.int64)
    mask[:, 3] = 0
    return [{"x": rng.normal(size=(8, 4)).astype(np.float32), "mask": mask}]


def test_finite_absmax_leaves_out_fills_infinities_and_nan():
    values = np.array([-3.0, 2.5, np.finfo(np.float32).min, np.inf, -np.inf, np.nan], np.float32)
    assert finite_absmax(values) == 3.0
    assert finite_absmax(np.array([np.finfo(np.float32).min], np.float32)) == 0.0


def test_values_beyond_data_max_and_layernorm_stay_fp32_attention_stays_fp16():
    model = _attention_like(scale=1.0)
    absmax = {"scores": 3.0, "masked": 3.0, "probs": 1.0, "grown": 600.0, "normed": 2.0}
    keep = fp32_nodes(model, absmax)
    assert keep["grow"].startswith("values beyond data_max: |grown| reaches 600")
    assert keep["norm"].startswith("LayerNormalization")  # also reads 600, but its reductions are fp32 regardless
    assert keep["edgec_output"].startswith("pooling tail")
    assert {keep[n].split(":")[0] for n in ("mask_cast", "mask_sub", "mask_mul")} == {"index arithmetic"}
    assert not {"scores_matmul", "mask_add", "softmax"} & set(keep), "attention within range runs in fp16"
    assert "grow" not in fp32_nodes(model, {**absmax, "grown": 500.0})
    keep_wide = fp32_nodes(model, {**absmax, "scores": 1e5})  # beyond fp16's own range
    assert {"scores_matmul", "mask_add", "grow"} <= set(keep_wide)


def test_a_tensor_beyond_range_measured_on_calibration_data_stays_fp32(tmp_path):
    from edgec.stages.mixed_precision import type_for_engine

    for scale, expect_fp32 in ((1000.0, True), (1.0, False)):
        source = tmp_path / f"scale{scale}.onnx"
        onnx.save(_attention_like(scale), str(source))
        note = type_for_engine(source, tmp_path / "typed.onnx", _feeds(), SessionSettings())
        assert ("grow" in note["fp32_by_data"]) is expect_fp32, note
        typed = onnx.shape_inference.infer_shapes(onnx.load(str(tmp_path / "typed.onnx")), strict_mode=True)
        types = tensor_types(typed)
        assert types["grown"] == (FLOAT if expect_fp32 else HALF)
        assert types["probs_fp16"] == HALF and types["normed"] == FLOAT and types["pooled"] == FLOAT


def test_typed_graph_is_valid_keeps_io_types_and_computes_the_same():
    model = _attention_like(scale=1.0)
    keep = fp32_nodes(model, {"scores": 3.0, "grown": 3.0})
    typed = onnx.shape_inference.infer_shapes(to_fp16(model, set(keep)), strict_mode=True)
    onnx.checker.check_model(typed, full_check=True)
    types = tensor_types(typed)
    assert types["w"] == HALF and types["gamma"] == FLOAT and types["lowest"] == FLOAT
    assert types["additive_mask"] == FLOAT and types["additive_mask_fp16"] == HALF  # the fill reaches fp16 as -inf
    assert [i.type.tensor_type.elem_type for i in typed.graph.input] == [FLOAT, TensorProto.INT64]
    assert [o.type.tensor_type.elem_type for o in typed.graph.output] == [FLOAT, FLOAT]
    casts = [n for n in typed.graph.node if n.op_type == "Cast" and n.name.endswith("_edgec_cast")]
    assert len({n.output[0] for n in casts}) == len(casts), "one Cast per tensor and direction"
    feed = _feeds()[0]
    reference = _run(model, feed)
    got = _run(typed, feed)
    for want, have in zip(reference, got):
        np.testing.assert_allclose(have, want, atol=2e-2)
    assert np.all(got[0][:, 3] == 0), "masked positions get probability 0"


def test_rounding_model_rounds_like_fp16_under_ort_optimizations():
    # y = x * 1 with the Mul in fp16: 1 + 2^-12 is not an fp16 value and must come out as 1.0.
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "one"], ["y"], name="times_one")],
        "identity",
        [helper.make_tensor_value_info("x", FLOAT, [1])],
        [helper.make_tensor_value_info("y", FLOAT, [1])],
        [numpy_helper.from_array(np.ones(1, np.float32), "one")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    typed = onnx.shape_inference.infer_shapes(to_fp16(model, set()), strict_mode=True)
    rounding = fp16_rounding_model(typed)
    assert {i.data_type for i in rounding.graph.initializer} == {FLOAT}
    assert [n.op_type for n in rounding.graph.node].count("Cast") >= 2, "the rounding pair"
    x = np.array([1 + 2**-12], np.float32)
    assert x[0] != 1.0
    plain = _run(model, {"x": x}, level="ORT_ENABLE_ALL")[0]
    rounded = _run(rounding, {"x": x}, level="ORT_ENABLE_ALL")[0]
    assert plain[0] == x[0] and rounded[0] == 1.0
    assert _run(rounding, {"x": np.array([1 + 2**-10], np.float32)})[0][0] == np.float32(1 + 2**-10), "fp16 values pass"


def _run(model: onnx.ModelProto, feed: dict, level: str = "ORT_ENABLE_ALL") -> list[np.ndarray]:
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = getattr(onnxruntime.GraphOptimizationLevel, level)
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feed)


@pytest.mark.parametrize("op", ["QuantizeLinear", "DequantizeLinear"])
def test_quantize_follows_its_input_and_dequantize_its_consumer(op):
    const = lambda name, value, dtype=np.float32: numpy_helper.from_array(np.asarray(value, dtype), name)  # noqa: E731
    nodes = [
        helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["normed"], name="norm", axis=-1),
        helper.make_node("QuantizeLinear", ["normed", "s", "zero"], ["q"], name="quantize"),
        helper.make_node("DequantizeLinear", ["q", "s", "zero"], ["dq"], name="dequantize"),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_zero"], ["w"], name="weight_dequantize", axis=1),
        helper.make_node("MatMul", ["dq", "w"], ["y"], name="matmul"),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", FLOAT, ["batch", 4])],
        [
            const("gamma", np.ones(4)),
            const("beta", np.zeros(4)),
            const("s", 0.05),
            const("zero", 0, np.int8),
            const("w_q", np.ones((4, 4)), np.int8),
            const("w_s", np.full(4, 0.01)),
            const("w_zero", np.zeros(4), np.int8),
        ],
    )
    model = onnx.shape_inference.infer_shapes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    )
    small = fp32_nodes(model, {"normed": 3.0, "dq": 3.0, "y": 10.0})
    assert small["quantize"].startswith("QuantizeLinear") and "dequantize" not in small and "matmul" not in small
    large = fp32_nodes(model, {"normed": 3.0, "dq": 3.0, "y": 1000.0})  # the MatMul's output needs fp32
    assert {"matmul", "dequantize", "weight_dequantize"} <= set(large)
    typed = onnx.shape_inference.infer_shapes(to_fp16(model, set(small)), strict_mode=True)
    onnx.checker.check_model(typed, full_check=True)
    types = tensor_types(typed)
    assert types["s"] == FLOAT and types["s_fp16"] == HALF and types["w_s"] == HALF and types["dq"] == HALF
    assert op in {n.op_type for n in typed.graph.node}
