"""DeBERTa-v3's relative position projections depend on weights only: static int8 computes them once, not per run."""

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

import edgec
from edgec.ops.constant_folding import fold_constants, input_independent
from edgec.stages import quantize


def _build(tiny_models, data_files, out, precision):
    return edgec.build(
        tiny_models("deberta-v2"),
        "ort-x86",
        recipe=edgec.Recipe(quant=edgec.QuantConfig(precision=precision)),
        calib=edgec.read_dataset(data_files["calib"]),
        out=out,
    )


def _run(model: onnx.ModelProto, batch: int, seq: int) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ids = np.random.default_rng(seq).integers(5, 100, (batch, seq))
    return session.run(None, {"input_ids": ids, "attention_mask": np.ones((batch, seq), np.int64)})


def test_the_folded_deberta_graph_computes_what_the_unfolded_one_does(tiny_models, data_files, tmp_path):
    unfolded = onnx.load(str(_build(tiny_models, data_files, tmp_path / "fp32", "fp32").model_path))
    folded = onnx.ModelProto()
    folded.CopyFrom(unfolded)
    done = fold_constants(folded)
    # 2 layers x (query, key) projections of the normalized position table, with their reshapes
    assert done.values == 4 and done.nodes > 4 * 3
    assert not any(n.op_type == "MatMul" and set(n.input) <= input_independent(folded) for n in folded.graph.node)
    for batch, seq in ((1, 3), (2, 17), (3, 40)):  # the table is sliced by the sequence length after the fold
        for want, got in zip(_run(unfolded, batch, seq), _run(folded, batch, seq)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_int8_deberta_quantizes_no_matmul_of_constants_and_keeps_parity(tiny_models, data_files, tmp_path):
    artifact = _build(tiny_models, data_files, tmp_path / "int8", "int8")
    assert artifact.manifest.parity.passed
    note = artifact.manifest.stages.quantize
    assert note.folded_nodes and note.folded_nodes > 0
    model = onnx.load(str(artifact.model_path))
    fixed = input_independent(model) | {i.name for i in model.graph.initializer}
    made = {o: n for n in model.graph.node for o in n.output}
    quantized = [
        n for n in model.graph.node if n.op_type == "MatMul" and made.get(n.input[1], n).op_type == "DequantizeLinear"
    ]
    assert len(quantized) == note.quantized_nodes == 12  # 2 layers x (Q, K, V, O, FFN in, FFN out)
    for node in quantized:
        assert not set(node.input) <= fixed, f"{node.name} dequantizes and multiplies constants on every run"
    assert not model.graph.value_info, "the inferred shapes the quantizer needed stay out of the file ORT runs"


def test_with_types_gives_the_shapes_inference_gives_the_whole_model(tiny_models, data_files, tmp_path):
    model = onnx.load(str(_build(tiny_models, data_files, tmp_path / "fp32", "fp32").model_path))
    whole = SymbolicShapeInference.infer_shapes(model, auto_merge=True, guess_output_rank=False)
    typed = quantize.with_types(model)  # inferred on a copy without the weights
    for field in ("value_info", "output", "node", "initializer"):
        assert sorted(v.SerializeToString() for v in getattr(typed.graph, field)) == sorted(
            v.SerializeToString() for v in getattr(whole.graph, field)
        ), field
