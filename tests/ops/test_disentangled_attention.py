"""DeBERTa's disentangled attention, fused into MultiHeadAttention with c2p + p2c as its bias, computes what the export
computes, for every real token.

The tiny config has 16 position buckets, so a 40-token sequence reaches the log-bucketed distances; the batch is padded
on the right, as tokenizers write it (a padded token's own state is nobody's output: see the module's docstring).
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgec.compression import surgery
from edgec.ops.disentangled_attention import fuse_disentangled_attention
from edgec.ops.graph import remove_dead_nodes
from edgec.stages.optimize import fuse


def _deberta(folder, **changes):
    """The tiny DeBERTa-v3 (with `changes` to its config), every weight but the norms' drawn large enough that
    attention is far from uniform and the position terms matter."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(folder)
    for name, value in changes.items():
        setattr(config, name, value)
    torch.manual_seed(0)
    model = AutoModel.from_config(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "LayerNorm" not in name:
                parameter.normal_(0.0, 0.4)
    return model


def _export(model, folder) -> onnx.ModelProto:
    """The exported graph after ORT's own fusions, as the optimize stage hands it to the rewrite."""
    from optimum.exporters.onnx import onnx_export_from_model

    onnx_export_from_model(model, folder, task="feature-extraction", opset=17, do_validation=False)
    return fuse(folder / "model.onnx", gelu_approximation=False).model


def _feeds(seq: int, vocab: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seq)
    ids = rng.integers(5, vocab, size=(3, seq)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 2 * seq // 3 :], mask[2, 3:] = 0, 0
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["last_hidden_state"], feeds)[0]


def _fused_equals_unfused(model: onnx.ModelProto, vocab: int, expected_fused: int) -> onnx.ModelProto:
    feeds = [_feeds(seq, vocab) for seq in (1, 13, 40)]
    before = [_run(model, f) for f in feeds]
    assert fuse_disentangled_attention(model) == expected_fused
    onnx.checker.check_model(model)  # still in topological order, nothing an If branch reads removed
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("MultiHeadAttention") == expected_fused
    assert ops.count("Softmax") == 2 - expected_fused
    assert "Tile" not in ops, "no position table is tiled over the batch"
    for f, unfused in zip(feeds, before, strict=True):
        real = f["attention_mask"].astype(bool)
        np.testing.assert_allclose(_run(model, f)[real], unfused[real], rtol=1e-4, atol=1e-4)
    return model


def test_deberta_v3_attention_is_fused_and_computes_the_same(tiny_models, tmp_path):
    model = _deberta(tiny_models("deberta-v2"))
    fused = _fused_equals_unfused(_export(model, tmp_path), model.config.vocab_size, expected_fused=2)
    attention = [n for n in fused.graph.node if n.op_type == "MultiHeadAttention"]
    assert all(n.input[5] for n in attention), "each layer reads its position terms as attention_bias"
    weights = {i.name for i in fused.graph.initializer}
    producers = {o: n for n in fused.graph.node for o in n.output}
    for node in attention:
        for projection in node.input[:3]:  # Q, K and V stay weight MatMuls (+ bias), which static int8 quantizes
            matmul = next(producers[i] for i in producers[projection].input if producers.get(i))
            assert matmul.op_type == "MatMul" and matmul.input[1] in weights
    ops = [n.op_type for n in fused.graph.node]
    assert ops.count("ReduceMin") == 2, "one window per term kind, shared by both layers"
    assert ops.count("GatherElements") == 4 and ops.count("Expand") == 2, "indices expanded once per kind"


@pytest.mark.parametrize(
    "changes",
    [
        {"pos_att_type": ["c2p"]},
        {"pos_att_type": ["p2c"]},
        {"share_att_key": False},  # DeBERTa-v2: position projections of their own
    ],
    ids=["c2p-only", "p2c-only", "own-position-projections"],
)
def test_other_deberta_configurations_are_fused_and_compute_the_same(tiny_models, tmp_path, changes):
    model = _deberta(tiny_models("deberta-v2"), **changes)
    _fused_equals_unfused(_export(model, tmp_path), model.config.vocab_size, expected_fused=2)


def test_pruned_deberta_fuses_each_layers_kept_heads(tiny_models, tmp_path):
    model = _deberta(tiny_models("deberta-v2"))
    surgery.keep_heads(model, 0, [1, 3])
    surgery.keep_heads(model, 1, [2])
    fused = _fused_equals_unfused(_export(model, tmp_path), model.config.vocab_size, expected_fused=2)
    heads = [
        next(a.i for a in n.attribute if a.name == "num_heads")
        for n in fused.graph.node
        if n.op_type == "MultiHeadAttention"
    ]
    assert heads == [2, 1]


@pytest.mark.parametrize("model_type", ["bert", "mpnet", "modernbert"])
def test_encoders_without_disentangled_attention_are_unchanged(tiny_models, tmp_path, model_type):
    from transformers import AutoModel

    exported = _export(AutoModel.from_pretrained(tiny_models(model_type)).eval(), tmp_path)
    before = exported.SerializeToString()
    assert fuse_disentangled_attention(exported) == 0
    assert exported.SerializeToString() == before


def test_dead_node_removal_keeps_what_only_a_branch_reads():
    """An If's branches may read outer values (DeBERTa's export does): those producers are not dead."""
    from onnx import TensorProto, helper

    branch = helper.make_graph(
        [helper.make_node("Identity", ["outer"], ["branch_out"])],
        "branch",
        [],
        [helper.make_tensor_value_info("branch_out", TensorProto.FLOAT, [1])],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["outer"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
            helper.make_node("Constant", [], ["unread"], value=helper.make_tensor("u", TensorProto.FLOAT, [1], [2.0])),
            helper.make_node("If", ["condition"], ["y"], then_branch=branch, else_branch=branch),
        ],
        "g",
        [helper.make_tensor_value_info("condition", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph)
    assert remove_dead_nodes(model) == 1
    assert [n.output[0] for n in model.graph.node] == ["outer", "y"]
