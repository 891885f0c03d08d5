"""Static int8's smoothing: every weight-MatMul input, the FFN down-projection's GELU output too, where
all-mpnet-base-v2 has the few huge channels that cost its int8 embeddings most of their accuracy."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgec.recipe import QuantConfig
from edgec.stages import quantize
from edgec.targets import QuantSettings, SessionSettings

OUTLIER = 5  # the GELU output channel that dwarfs the rest


def _ffn() -> onnx.ModelProto:
    """y = Gelu(x @ W_in) @ W_out, as ORT's fusions leave an FFN (a contrib Gelu feeding the down-projection);
    W_in makes channel OUTLIER of the GELU output ~50x the others."""
    rng = np.random.default_rng(0)
    w_in = rng.normal(scale=0.3, size=(8, 32)).astype(np.float32)
    w_in[:, OUTLIER] *= 100.0
    weights = [
        numpy_helper.from_array(w_in, "W_in"),
        numpy_helper.from_array(rng.normal(scale=0.3, size=(32, 8)).astype(np.float32), "W_out"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W_in"], ["up"], name="ffn_in"),
        helper.make_node("Gelu", ["up"], ["act"], name="gelu", domain="com.microsoft"),
        helper.make_node("MatMul", ["act", "W_out"], ["y"], name="ffn_out"),
    ]
    graph = helper.make_graph(
        nodes,
        "ffn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "seq", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "seq", 8])],
        weights,
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )


def _feeds() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [
        {"x": rng.normal(size=(1, 16, 8)).astype(np.float32), "attention_mask": np.ones((1, 16), np.int64)}
        for _ in range(4)
    ]


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["y"], {"x": feed["x"]})[0]


def _down_projection_error(model: onnx.ModelProto) -> float:
    """The down-projection's own int8 error on the calibration data, with the ranges calibrate() gives it."""
    settings = QuantSettings()
    _, sensitivity, _ = quantize.calibrate(model, _feeds(), QuantConfig(), settings, SessionSettings())
    return sensitivity["ffn_out"]


def test_the_down_projection_input_is_smoothed_too():
    model = _ffn()
    groups = quantize.smoothable_groups(model)
    assert sorted(groups) == ["act", "x"], "the GELU output is smoothed like every other weight-MatMul input"


def test_smoothing_the_gelu_output_keeps_the_outputs_and_cuts_its_int8_error():
    model, feeds = _ffn(), _feeds()
    before = _run(model, feeds[0])
    peak = quantize.collect_stats(quantize.with_types(_ffn()), ["act"], feeds, SessionSettings())["act"].channel_absmax
    assert int(np.argmax(peak)) == OUTLIER and peak[OUTLIER] > 10 * np.median(peak), "the toy has its outlier"
    unsmoothed = _down_projection_error(quantize.with_types(_ffn()))
    typed = quantize.with_types(model)
    smoothed = quantize.smooth(typed, quantize.smoothable_groups(typed), feeds, SessionSettings())
    down = next(n for n in smoothed.graph.node if n.name == "ffn_out")
    assert down.input[0] == "act_edgec_smoothed"
    np.testing.assert_allclose(_run(smoothed, feeds[0]), before, rtol=1e-4, atol=1e-4)
    assert _down_projection_error(smoothed) < 0.5 * unsmoothed
