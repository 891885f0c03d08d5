import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from edgec.ops.pooling import append_pooling
from edgec.source import Pooling, pool


def _identity_encoder(opset: int) -> onnx.ModelProto:
    """A graph whose 'last_hidden_state' is its float input, beside an attention_mask input."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["hidden_in"], ["last_hidden_state"])],
        "enc",
        [
            helper.make_tensor_value_info("hidden_in", TensorProto.FLOAT, ["b", "s", 4]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "s"]),
        ],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["b", "s", 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("mode", ["mean", "cls", "max"])
@pytest.mark.parametrize("normalize", [False, True])
def test_onnx_pooling_matches_torch_pooling(opset, mode, normalize):
    model = _identity_encoder(opset)
    append_pooling(
        model,
        hidden="last_hidden_state",
        mask="attention_mask",
        mode=mode,
        normalize=normalize,
        output="sentence_embedding",
    )
    onnx.checker.check_model(model)
    hidden = np.random.default_rng(0).normal(size=(3, 5, 4)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=np.int64)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(["sentence_embedding"], {"hidden_in": hidden, "attention_mask": mask})[0]
    expected = pool(torch.from_numpy(hidden), torch.from_numpy(mask), Pooling(mode, normalize)).numpy()
    assert got.shape == (3, 4)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
