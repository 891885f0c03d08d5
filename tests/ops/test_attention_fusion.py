"""MPNet's attention with its relative position bias, fused into MultiHeadAttention, computes what the export computes."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgec.compression import surgery
from edgec.ops.attention_fusion import fuse_biased_attention


def _random_mpnet(layers: int = 3):
    """A tiny MPNet with every weight drawn large enough that attention is far from uniform."""
    from transformers import MPNetConfig, MPNetModel

    torch.manual_seed(0)
    config = MPNetConfig(
        vocab_size=60,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=72,
        pad_token_id=1,
    )
    model = MPNetModel(config, add_pooling_layer=False).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.4)
    return model


def _export(model, folder) -> onnx.ModelProto:
    from optimum.exporters.onnx import onnx_export_from_model

    onnx_export_from_model(model, folder, task="feature-extraction", opset=17, do_validation=False)
    return onnx.load(str(folder / "model.onnx"))


def _feeds(batch: int = 3, seq: int = 13) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    ids = rng.integers(5, 60, size=(batch, seq)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 9:], mask[2, 4:] = 0, 0  # right padding, as tokenizers write it
    ids[mask == 0] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _run(model: onnx.ModelProto) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["last_hidden_state"], _feeds())[0]


def _fused_equals_unfused(model, tmp_path, expected_fused: int) -> onnx.ModelProto:
    exported = _export(model, tmp_path)
    before = _run(exported)
    assert fuse_biased_attention(exported) == expected_fused
    ops = [n.op_type for n in exported.graph.node]
    assert ops.count("MultiHeadAttention") == expected_fused and "Softmax" not in ops
    real = _feeds()["attention_mask"].astype(bool)
    np.testing.assert_allclose(_run(exported)[real], before[real], rtol=1e-4, atol=1e-4)
    return exported


def test_mpnet_attention_is_fused_with_its_position_bias_and_computes_the_same(tmp_path):
    fused = _fused_equals_unfused(_random_mpnet(), tmp_path, expected_fused=3)
    attention = [n for n in fused.graph.node if n.op_type == "MultiHeadAttention"]
    bias_inputs = {n.input[5] for n in attention}
    assert len(bias_inputs) == 1, "one position bias, computed once per run, feeds every layer"
    (bias,) = bias_inputs
    producer = next(n for n in fused.graph.node if bias in n.output)
    assert producer.op_type == "Unsqueeze", (
        "the bias reaches the op as (1, heads, seq, seq), not expanded over the batch"
    )
    qkv = {n.input[i] for n in attention for i in range(3)}
    matmuls = {n.output[0]: n for n in fused.graph.node if n.op_type == "MatMul"}
    assert qkv <= set(matmuls), "Q, K and V stay separate weight MatMuls (static int8 quantizes them)"


def test_pruned_mpnet_slices_the_position_bias_to_each_layers_kept_heads(tmp_path):
    model = _random_mpnet()
    surgery.keep_heads(model, 0, [1, 3])
    surgery.keep_heads(model, 1, [2])
    surgery.keep_heads(model, 2, [])  # no head left: the attention became a constant, nothing to fuse there
    fused = _fused_equals_unfused(model, tmp_path, expected_fused=2)
    heads = [
        next(a.i for a in n.attribute if a.name == "num_heads")
        for n in fused.graph.node
        if n.op_type == "MultiHeadAttention"
    ]
    assert heads == [2, 1]
    gathers = [
        n for n in fused.graph.node if n.op_type == "Gather" and any(a.name == "axis" and a.i == 1 for a in n.attribute)
    ]
    assert len(gathers) == 2, "each pruned layer reads its kept heads of the shared bias"


def test_layers_that_keep_the_same_heads_share_one_bias_gather_and_every_one_is_fused(tmp_path):
    """The exporter writes one Gather of kept heads for layers that keep the same heads (as MPNet's hidden pruning
    makes them): fusing the first layer must not hide the bias from the others."""
    model = _random_mpnet()
    for layer in range(3):
        surgery.keep_heads(model, layer, [0, 2])
    fused = _fused_equals_unfused(model, tmp_path, expected_fused=3)
    gathers = [
        n for n in fused.graph.node if n.op_type == "Gather" and any(a.name == "axis" and a.i == 1 for a in n.attribute)
    ]
    assert len(gathers) == 1, "the layers read one shared Gather of the bias"


@pytest.mark.parametrize("model_type", ["bert", "distilbert"])
def test_encoders_without_a_position_bias_are_left_to_ort(tiny_models, tmp_path, model_type):
    """After ORT's own fusions, BERT-like graphs hold no unfused attention: the rewrite changes nothing."""
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import AutoModel

    exported = _export(AutoModel.from_pretrained(tiny_models(model_type)).eval(), tmp_path)
    optimized = optimize_model(exported, model_type="bert", num_heads=0, hidden_size=0, opt_level=0).model
    before = optimized.SerializeToString()
    assert fuse_biased_attention(optimized) == 0
    assert optimized.SerializeToString() == before
