"""ModernBERT's rotary attention, fused into RotaryEmbedding and MultiHeadAttention, computes what the export computes.

The tiny config alternates a global layer (0) and a local one (1) with a 4-token window, so sequences of 13 tokens
are masked by the window in layer 1; the batch is padded on the right, as tokenizers write it.
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgec.compression import surgery
from edgec.ops.rotary_attention import fuse_rotary_attention
from edgec.stages.optimize import fuse

_POSITIONS = 72  # the tiny config's max_position_embeddings


def _modernbert(folder, attention: str = "sdpa"):
    """The tiny ModernBERT with every weight but the norms' drawn large enough that attention is far from uniform."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(folder, attn_implementation=attention).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" not in name:
                parameter.normal_(0.0, 0.4)
    return model


def _export(model, folder, *, optimized: bool = False) -> onnx.ModelProto:
    """The exported graph; `optimized`: after ORT's own fusions, as the optimize stage hands it to the rewrite."""
    from optimum.exporters.onnx import onnx_export_from_model

    onnx_export_from_model(model, folder, task="feature-extraction", opset=17, do_validation=False)
    return (
        fuse(folder / "model.onnx", gelu_approximation=False).model if optimized else onnx.load(folder / "model.onnx")
    )


def _feeds(seq: int = 13) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    ids = rng.integers(5, 250, size=(3, seq)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 9:], mask[2, 3:] = 0, 0  # right padding; row 2 is shorter than the window
    ids[mask == 0] = 3
    return {"input_ids": ids, "attention_mask": mask}


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["last_hidden_state"], feeds)[0]


def _fused_equals_unfused(model: onnx.ModelProto, expected_fused: int) -> onnx.ModelProto:
    feeds = [_feeds(), _feeds(seq=40)]
    before = [_run(model, f) for f in feeds]
    assert fuse_rotary_attention(model, _POSITIONS) == expected_fused
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("MultiHeadAttention") == expected_fused and "Softmax" not in ops
    assert ops.count("RotaryEmbedding") == 2 * expected_fused
    for f, unfused in zip(feeds, before, strict=True):
        real = f["attention_mask"].astype(bool)  # padded positions are nobody's output
        np.testing.assert_allclose(_run(model, f)[real], unfused[real], rtol=1e-4, atol=1e-4)
    return model


@pytest.mark.parametrize("optimized", [False, True], ids=["export", "after-ort-fusions"])
def test_modernbert_attention_is_fused_and_computes_the_same(tiny_models, tmp_path, optimized):
    fused = _fused_equals_unfused(_export(_modernbert(tiny_models("modernbert")), tmp_path, optimized=optimized), 2)
    attention = [n for n in fused.graph.node if n.op_type == "MultiHeadAttention"]
    assert len({n.input[5] for n in attention}) == 2, "global and local layers read their own mask"
    rotary = [n for n in fused.graph.node if n.op_type == "RotaryEmbedding"]
    assert len({n.input[2] for n in rotary}) == 2, "one cos table per rope theta, shared by the layers using it"
    producers = {o: n for n in fused.graph.node for o in n.output}
    splits = {producers[n.input[0]].op_type for n in rotary}
    assert splits == {"Split"}
    weights = {i.name for i in fused.graph.initializer}
    for split in (producers[n.input[0]] for n in rotary):
        projection = producers[split.input[0]]
        assert projection.op_type == "MatMul" and projection.input[1] in weights, "Wqkv stays one weight MatMul"


def test_eager_attention_is_fused_too(tiny_models, tmp_path):
    """Eager attention scales Q·Kᵀ after the product (its float-to-float Casts around the dropout go in ORT's fusions)."""
    model = _modernbert(tiny_models("modernbert"), "eager")
    _fused_equals_unfused(_export(model, tmp_path, optimized=True), expected_fused=2)


def test_pruned_modernbert_fuses_each_layers_kept_heads(tiny_models, tmp_path):
    model = _modernbert(tiny_models("modernbert"))
    surgery.keep_heads(model, 0, [1, 3])
    surgery.keep_heads(model, 1, [2])
    fused = _fused_equals_unfused(_export(model, tmp_path), expected_fused=2)
    heads = [
        next(a.i for a in n.attribute if a.name == "num_heads")
        for n in fused.graph.node
        if n.op_type == "MultiHeadAttention"
    ]
    assert heads == [2, 1]


def test_a_layer_without_heads_is_left_alone(tiny_models, tmp_path):
    model = _modernbert(tiny_models("modernbert"))
    surgery.keep_heads(model, 1, [])  # its attention became a constant: nothing to fuse there
    _fused_equals_unfused(_export(model, tmp_path), expected_fused=1)


@pytest.mark.parametrize("model_type", ["bert", "mpnet"])
def test_encoders_without_rotary_attention_are_unchanged(tiny_models, tmp_path, model_type):
    from transformers import AutoModel

    exported = _export(AutoModel.from_pretrained(tiny_models(model_type)).eval(), tmp_path)
    before = exported.SerializeToString()
    assert fuse_rotary_attention(exported, _POSITIONS) == 0
    assert exported.SerializeToString() == before
