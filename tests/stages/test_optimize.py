"""The optimize stage's fusions.

- ORT's shape inference sees no weights, and the fused graph is the one it gives with them.
- Hidden-pruned encoders (issue 14): the residual stream narrower than the unpruned one and, with heads pruned too,
  than the Q/K/V projections (heads x head_dim). Every attention is still fused, and the fused graph computes what the
  exported one computes.
"""

import dataclasses
import importlib
import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import transformers
from conftest import SENTENCES
from onnxruntime.transformers.optimizer import optimize_model

from edgec.compression import hidden_surgery, surgery
from edgec.data import Dataset, Example
from edgec.parity.evalset import reference_outputs
from edgec.pipeline import Context
from edgec.recipe import ParityThresholds, QuantConfig, Recipe
from edgec.source import Source, load_source
from edgec.stages import optimize as optimize_stage
from edgec.stages.export import export
from edgec.stages.optimize import optimize
from edgec.targets import load_target

DATA = Dataset(tuple(Example(t) for t in SENTENCES), "sentences")


def _hidden_pruned(folder) -> Source:
    """The tiny model (32 channels, 2 layers of 4 heads of 8) with 24 channels and heads 1 and 3 kept in both layers:
    16-wide Q/K/V projections on a 24-wide stream, where ORT's fusion logs that the widths differ. Keeping the same
    heads in both layers is what MPNet's hidden pruning does (its layers share the bias columns the width holds)."""
    source = load_source(folder)
    model = source.model
    for layer in (0, 1):
        surgery.keep_heads(model, layer, [1, 3])
    hidden_surgery.keep_channels(model, [c for c in range(32) if c % 4 != 2])
    return dataclasses.replace(source, model=model)


def _context(source: Source, workdir) -> Context:
    return Context(
        source=source,
        recipe=Recipe(quant=QuantConfig(precision="fp32")),
        target=load_target("ort-x86"),
        thresholds=ParityThresholds(),
        workdir=workdir,
        calib=DATA,
        evaluation=reference_outputs(source, DATA, 64, hidden_pruned=True),
    )


def _run(path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()}), strict=True))


@pytest.mark.parametrize("model_type", ["bert", "mpnet"])
def test_hidden_pruned_attention_is_fused_and_computes_the_same(tiny_models, tmp_path, model_type, caplog):
    source = _hidden_pruned(tiny_models(model_type))
    exported = export(_context(source, tmp_path), token_states=True)
    with caplog.at_level(logging.INFO):
        optimized = optimize(exported)
    assert not [r.getMessage() for r in caplog.records if "hidden size" in r.getMessage()], "ORT's misleading warning"
    ops = [n.op_type for n in onnx.load(str(optimized.onnx_path)).graph.node]
    assert ops.count("MultiHeadAttention") == 2 and "Softmax" not in ops, "one fused attention per layer"
    assert optimized.notes.optimize.fused_ops["MultiHeadAttention"] == 2
    encoded = source.tokenizer(SENTENCES[:6], padding=True, return_tensors="np")
    feeds = {k: v.astype(np.int64) for k, v in encoded.items()}
    before, after = _run(exported.onnx_path, feeds), _run(optimized.onnx_path, feeds)
    real = feeds["attention_mask"].astype(bool)  # padded positions are nobody's output
    assert after["last_hidden_state"].shape[-1] == 24
    np.testing.assert_allclose(
        after["last_hidden_state"][real], before["last_hidden_state"][real], rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(after["sentence_embedding"], before["sentence_embedding"], rtol=1e-4, atol=1e-4)


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
    fused = optimize_stage.fuse(path, gelu_approximation=True)
    assert largest and max(largest) <= 64, "shape inference was handed the weights"
    with_weights = optimize_model(
        str(path),
        model_type="bert",
        num_heads=0,
        hidden_size=0,
        optimization_options=optimize_stage.fusion_options(gelu_approximation=True),
        opt_level=0,
        use_gpu=False,
    )
    assert fused.model.SerializeToString() == with_weights.model.SerializeToString()
    assert helper.SymbolicShapeInferenceHelper is recording, "the stage puts ORT's helper back"
    if model_type == "bert":
        assert fused.get_fused_operator_statistics()["MultiHeadAttention"] == 2


def _fused_by_the_stage(source, tmp_path, texts: list[str]):
    """Export with token states and optimize; the fused graph computes what the export does on every real token and
    in the pooled embedding. Returns the optimize note."""
    exported = export(_context(source, tmp_path), token_states=True)
    optimized = optimize(exported)
    ops = [n.op_type for n in onnx.load(str(optimized.onnx_path)).graph.node]
    assert ops.count("MultiHeadAttention") == 2 and "Softmax" not in ops, "one fused attention per layer"
    encoded = source.tokenizer(texts, padding=True, return_tensors="np")
    feeds = {k: v.astype(np.int64) for k, v in encoded.items()}
    before, after = _run(exported.onnx_path, feeds), _run(optimized.onnx_path, feeds)
    real = feeds["attention_mask"].astype(bool)
    np.testing.assert_allclose(
        after["last_hidden_state"][real], before["last_hidden_state"][real], rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(after["sentence_embedding"], before["sentence_embedding"], rtol=1e-4, atol=1e-4)
    return optimized.notes.optimize


def test_modernbert_attention_is_fused_by_the_stage_and_counted(tiny_models, tmp_path):
    """Heads pruned differently per layer; inputs longer than the local layer's 4-token window, padded."""
    source = load_source(tiny_models("modernbert"))
    surgery.keep_heads(source.model, 0, [0, 2, 3])
    surgery.keep_heads(source.model, 1, [1])
    note = _fused_by_the_stage(source, tmp_path, [" ".join(SENTENCES[:3]), *SENTENCES[3:6]])
    assert note.rotary_attention == 2 and note.fused_ops["MultiHeadAttention"] == 2
    assert note.fused_ops["RotaryEmbedding"] == 4


def test_deberta_attention_is_fused_by_the_stage_and_counted(tiny_models, tmp_path):
    """Heads pruned differently per layer; a batch padded on the right, one text past the 16 position buckets."""
    source = load_source(tiny_models("deberta-v2"))
    surgery.keep_heads(source.model, 0, [0, 2, 3])
    surgery.keep_heads(source.model, 1, [1])
    note = _fused_by_the_stage(source, tmp_path, [" ".join(SENTENCES[:6]), *SENTENCES[6:9]])
    assert note.disentangled_attention == 2 and note.fused_ops["MultiHeadAttention"] == 2


@pytest.mark.parametrize(
    ("model_type", "profile_key", "note_field"),
    [
        ("modernbert", "fuse_rotary_attention", "rotary_attention"),
        ("deberta-v2", "fuse_biased_attention", "disentangled_attention"),
    ],
)
def test_attention_stays_unfused_where_the_profile_says_so(tiny_models, tmp_path, model_type, profile_key, note_field):
    source = load_source(tiny_models(model_type))
    context = _context(source, tmp_path)
    context = dataclasses.replace(context, target=dataclasses.replace(context.target, **{profile_key: False}))
    optimized = optimize(export(context))
    assert getattr(optimized.notes.optimize, note_field) == 0
    assert "Softmax" in {n.op_type for n in onnx.load(str(optimized.onnx_path)).graph.node}
