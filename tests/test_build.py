"""End-to-end builds of tiny random models: every architecture, precision and task."""

import numpy as np
import onnxruntime as ort
import pytest
from conftest import ARCHITECTURES, SENTENCES, gelu_outputs_unsmoothed
from transformers import AutoTokenizer

import edgec
from edgec.artifacts.manifest import Manifest
from edgec.errors import InputError, ParityError
from edgec.parity import metrics
from edgec.parity.evalset import reference_outputs
from edgec.recipe import ParityThresholds, QuantConfig, Recipe
from edgec.source import load_source

PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8")


def _build(model, out, precision, data=None, **recipe):
    return edgec.build(
        model,
        "ort-x86",
        recipe=Recipe(quant=QuantConfig(precision=precision), **recipe),
        calib=data,
        eval=data,
        out=out,
    )


def _plain_ort(artifact_dir, texts, pairs=None):
    """What a user without edgec does: onnxruntime + the saved tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(artifact_dir)
    session = ort.InferenceSession(str(artifact_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = tokenizer(texts, pairs, padding=True, return_tensors="np")
    names = [i.name for i in session.get_inputs()]
    return session.run(None, {k: v.astype(np.int64) for k, v in feeds.items() if k in names})


@pytest.mark.parametrize("model_type", ARCHITECTURES)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_architecture_and_precision_builds_and_passes(tiny_models, data_files, tmp_path, model_type, precision):
    folder = tiny_models(model_type)
    artifact = _build(folder, tmp_path / "out", precision, edgec.read_dataset(data_files["pairs"]))
    manifest = artifact.manifest
    assert manifest.parity.passed
    assert [r.stage for r in manifest.parity.ledger][:2] == ["export", "optimize"]
    assert manifest.parity.ledger[-1].stage == "artifact"
    for name in (
        "model.onnx",
        "edgec.json",
        "report.md",
        "report.html",
        "parity.png",
        "tokenizer.json",
        "README.md",
        "config.json",
    ):
        assert (tmp_path / "out" / name).is_file(), name
    embeddings, token_states = _plain_ort(tmp_path / "out", SENTENCES[:4])  # sentence_embedding, last_hidden_state
    source = load_source(folder)
    reference = reference_outputs(source, edgec.Dataset(tuple(edgec.Example(t) for t in SENTENCES[:4]), "x"), 64)
    cosine = metrics.cosine_rows(embeddings, reference.reference.values["sentence_embedding"])
    assert cosine.min() > 0.98
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-3)  # the Normalize module
    assert token_states.shape[0] == 4 and token_states.shape[2] == embeddings.shape[1]


@pytest.mark.parametrize("task", ["sequence-classification", "token-classification", "question-answering"])
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_every_task_builds(tiny_models, data_files, tmp_path, task, precision):
    data = edgec.read_dataset(data_files["labels"])
    artifact = _build(tiny_models("bert", task), tmp_path / "out", precision, data)
    final = artifact.manifest.parity.ledger[-1].metrics
    assert artifact.manifest.parity.passed and final["agreement"] >= 0.97
    outputs = _plain_ort(tmp_path / "out", SENTENCES[:3])
    assert len(outputs) == (2 if task == "question-answering" else 1)
    if task == "sequence-classification":
        assert "accuracy" in final and artifact.manifest.labels


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_builds_are_byte_reproducible(tiny_models, data_files, tmp_path, precision):
    data = edgec.read_dataset(data_files["pairs"])
    first = _build(tiny_models("roberta"), tmp_path / "a", precision, data)
    second = _build(tiny_models("roberta"), tmp_path / "b", precision, data)
    assert (tmp_path / "a" / "model.onnx").read_bytes() == (tmp_path / "b" / "model.onnx").read_bytes()
    # Everything but the reports (which carry stage wall times) is identical too.
    same = lambda files: {k: v for k, v in files.items() if not k.startswith("report.")}  # noqa: E731
    assert same(first.manifest.files) == same(second.manifest.files)
    assert [r.metrics for r in first.manifest.parity.ledger] == [r.metrics for r in second.manifest.parity.ledger]


def test_default_calibration_corpus_is_used(tiny_models, tmp_path):
    artifact = edgec.build(
        tiny_models("bert"),
        "ort",
        recipe=Recipe(quant=QuantConfig(precision="int8", calib_samples=32)),
        out=tmp_path / "o",
    )
    assert artifact.manifest.parity.eval_data == "calibration sample (no --eval)"
    assert artifact.manifest.parity.eval_examples == 32 and artifact.manifest.parity.selection_examples == 0


def test_without_eval_data_the_build_says_what_parity_was_measured_on(tiny_models, data_files, tmp_path, caplog):
    edgec.build(
        tiny_models("bert"),
        "ort",
        recipe=Recipe(quant=QuantConfig(precision="fp32")),
        calib=edgec.read_dataset(data_files["calib"]),
        out=tmp_path / "o",
    )
    assert any("no --eval: parity is measured on the 20 calibration texts" in r.getMessage() for r in caplog.records)


def test_a_selecting_stage_chooses_on_part_of_the_eval_data_and_the_gate_judges_the_rest(
    tiny_models, data_files, tmp_path
):
    artifact = edgec.build(
        tiny_models("bert"),
        "ort",
        recipe=Recipe(quant=QuantConfig(precision="int8")),
        calib=edgec.read_dataset(data_files["calib"]),
        eval=edgec.read_dataset(data_files["pairs"]),
        out=tmp_path / "o",
    )
    parity = artifact.manifest.parity
    assert (parity.selection_examples, parity.eval_examples) == (6, 14)  # 30% and 70% of 20 pairs
    assert "gate judged 14 examples; 6 more chosen on" in (artifact.path / "report.md").read_text()


def test_static_int8_quantizes_weight_matmuls_only(tiny_models, data_files, tmp_path):
    import onnx

    _build(tiny_models("mpnet"), tmp_path / "o", "int8", edgec.read_dataset(data_files["calib"]))
    graph = onnx.load(str(tmp_path / "o" / "model.onnx")).graph
    constants = {i.name for i in graph.initializer}
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    matmuls = [n for n in graph.node if n.op_type == "MatMul"]
    weight_matmuls = [n for n in matmuls if n.input[1] in dequantized]
    assert weight_matmuls, "no quantized MatMul"
    for node in matmuls:  # activation x activation products (attention scores) stay float
        if node.input[1] not in dequantized:
            assert node.input[1] not in constants
    assert not any(n.op_type in ("DynamicQuantizeLinear", "MatMulInteger") for n in graph.node)
    # Activations are quantized statically (a QuantizeLinear per MatMul input), not only the weights.
    activation_quantizers = [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in constants]
    assert len(activation_quantizers) >= len({n.input[0] for n in weight_matmuls})


def test_failed_parity_is_rejected_not_published(tiny_models, data_files, tmp_path):
    data = edgec.read_dataset(data_files["pairs"])
    # Without the fallback, int8 misses the bar as quantized (with it, it would be refused: tests/stages/test_fallback.py).
    recipe = Recipe(
        quant=QuantConfig(precision="int8", fallback=False), parity=ParityThresholds(min_cosine=0.9999999999)
    )
    with pytest.raises(ParityError, match="first lost at stage 'quantize'"):
        edgec.build(tiny_models("electra"), "ort-x86", recipe=recipe, calib=data, eval=data, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    rejected = Manifest.read(tmp_path / "out.rejected")
    assert not rejected.parity.passed
    assert rejected.stages.fallback is None


@pytest.fixture
def outlier_model(tiny_models, tmp_path):
    """The tiny BERT with one huge FFN neuron in layer 1: an outlier channel only that layer's FFN-out sees."""
    import shutil

    import torch
    from transformers import AutoModel

    folder = shutil.copytree(tiny_models("bert"), tmp_path / "outlier")
    model = AutoModel.from_pretrained(folder)
    with torch.no_grad():
        neuron = model.encoder.layer[1].intermediate.dense
        neuron.weight[5] *= 40
        neuron.bias[5] = 40.0
    model.save_pretrained(folder)
    return folder


def test_fallback_keeps_only_the_sensitive_node_in_float(outlier_model, data_files, tmp_path):
    data = edgec.read_dataset(data_files["pairs"])
    with gelu_outputs_unsmoothed():
        artifact = _build(outlier_model, tmp_path / "fb", "int8", data, parity=ParityThresholds(min_cosine=0.99999))
    stages = artifact.manifest.stages
    assert artifact.manifest.parity.passed
    assert stages.fallback.kept_in_float == ["/encoder/layer.1/output/dense/MatMul"]
    assert stages.quantize.quantized_nodes > 1
    assert stages.fallback.quantized_nodes == stages.quantize.quantized_nodes - 1
    ledger = {r.stage: r for r in artifact.manifest.parity.ledger}
    assert ledger["quantize"].failures and not ledger["fallback"].failures
    assert "/encoder/layer.1/output/dense/MatMul" in (tmp_path / "fb" / "report.md").read_text()


def test_bad_input_leaves_no_partial_output(tiny_models, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(InputError):
        edgec.build(folder, out=tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]


def test_existing_output_needs_force(tiny_models, data_files, tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(InputError, match="--force"):
        edgec.build(tiny_models("bert"), out=tmp_path / "out")
    data = edgec.read_dataset(data_files["calib"])
    artifact = edgec.build(
        tiny_models("bert"),
        recipe=Recipe(quant=QuantConfig(precision="fp32")),
        calib=data,
        out=tmp_path / "out",
        force=True,
    )
    assert artifact.manifest.precision == "fp32"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_arm64_profile_builds_signed_int8(tiny_models, data_files, tmp_path):
    """The ARM profile's s8 x s8 layout builds and passes parity (run here on x86 ONNX Runtime)."""
    import onnx

    artifact = edgec.build(
        tiny_models("bert"),
        "ort-arm64",
        recipe=Recipe(quant=QuantConfig(precision="int8")),
        calib=edgec.read_dataset(data_files["calib"]),
        out=tmp_path / "arm",
    )
    assert artifact.manifest.parity.passed and artifact.manifest.target.name == "ort-arm64"
    graph = onnx.load(str(tmp_path / "arm" / "model.onnx")).graph
    constants = {i.name: i for i in graph.initializer}
    zero_points = [
        constants[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear" and n.input[2] in constants
    ]
    assert zero_points and all(z.data_type == onnx.TensorProto.INT8 for z in zero_points)
