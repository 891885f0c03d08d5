"""The optimize stage's fusions: ORT's shape inference sees no weights, and the fused graph is the one it gives with them."""

import importlib

import numpy as np
import pytest
import transformers
from onnxruntime.transformers.optimizer import optimize_model

from edgec.stages import optimize


def _export(folder, out):
    from optimum.exporters.onnx import onnx_export_from_model

    model = transformers.AutoModel.from_pretrained(folder).eval()
    onnx_export_from_model(model, out, task="feature-extraction", opset=17, do_validation=False)
    return out / "model.onnx"


@pytest.mark.parametrize("model_type", ["bert", "deberta-v2"])  # attention fusion; If subgraphs
def test_fusions_infer_shapes_on_a_weightless_copy_and_fuse_the_same(tiny_models, tmp_path, model_type, monkeypatch):
    path = _export(tiny_models(model_type), tmp_path)
    helper = importlib.import_module("shape_infer_helper")
    original, largest = helper.SymbolicShapeInferenceHelper, []

    def recording(model, *args, **kwargs):
        largest.append(max(int(np.prod(i.dims)) for i in model.graph.initializer))
        return original(model, *args, **kwargs)

    monkeypatch.setattr(helper, "SymbolicShapeInferenceHelper", recording)
    fused = optimize.fuse(path, gelu_approximation=True)
    assert largest and max(largest) <= 64, "shape inference was handed the weights"
    with_weights = optimize_model(
        str(path),
        model_type="bert",
        num_heads=0,
        hidden_size=0,
        optimization_options=optimize.fusion_options(gelu_approximation=True),
        opt_level=0,
        use_gpu=False,
    )
    assert fused.model.SerializeToString() == with_weights.model.SerializeToString()
    assert helper.SymbolicShapeInferenceHelper is recording, "the stage puts ORT's helper back"
    if model_type == "bert":
        assert fused.get_fused_operator_statistics()["MultiHeadAttention"] == 2
