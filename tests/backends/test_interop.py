"""Artifacts loaded by the libraries people already use: sentence-transformers, Optimum, transformers pipelines.

Each test runs the real library on a real artifact folder and compares with `edgec run`. The artifact holds no
PyTorch weights, and the tests check that the library's ONNX Runtime session is the artifact's own model.onnx
(sentence-transformers would otherwise export a fresh model from PyTorch weights without a word).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import SENTENCES, invoke

import edgec
from edgec.recipe import ParityThresholds, PruneConfig, QuantConfig, Recipe

TEXTS = SENTENCES[:6] + [
    "a much longer text: the quick brown fox jumps over the lazy dog and they read a book on the train"
]
LOOSE = ParityThresholds(min_cosine=0.0, min_agreement=0.0, max_drop=100.0)


def _build(model, out, precision, data, prune=None):
    recipe = Recipe(
        quant=QuantConfig(precision=precision),
        prune=PruneConfig(fraction=prune) if prune else None,
        parity=LOOSE if prune else ParityThresholds(),
    )
    return edgec.build(model, "ort-x86", recipe=recipe, calib=data, eval=data, out=out)


def _edgec_run(artifact, texts):
    """What `edgec run --json` prints for the texts, as arrays."""
    result = invoke("run", artifact, *texts, "--json")
    assert result.exit_code == 0, result.output
    return {k: np.asarray(v, dtype=np.float32) for k, v in json.loads(result.stdout)["outputs"].items()}


def _assert_same_vectors(mine, theirs):
    cosine = (mine * theirs).sum(1) / np.linalg.norm(mine, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cosine.min() >= 0.9999, cosine
    np.testing.assert_allclose(np.linalg.norm(theirs, axis=1), np.linalg.norm(mine, axis=1), rtol=1e-4)
    np.testing.assert_allclose(theirs, mine, atol=1e-4)


def _assert_no_pytorch_weights(folder):
    assert not [p.name for p in folder.rglob("*") if p.suffix in (".safetensors", ".bin", ".pt", ".pth")]


@pytest.fixture(scope="module")
def cls_unnormalized(tiny_models, tmp_path_factory):
    """The tiny BERT embedder re-declared with CLS pooling and no Normalize module: norms are not 1."""
    folder = shutil.copytree(tiny_models("bert"), tmp_path_factory.mktemp("cls") / "bert-cls")
    modules = [m for m in json.loads((folder / "modules.json").read_text()) if not m["type"].endswith("Normalize")]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, "pooling_mode_cls_token": True})
    )
    return folder


@pytest.mark.parametrize(
    ("source", "precision", "prune"),
    [
        ("mean-normalized", "fp32", None),
        ("mean-normalized", "int8", None),
        ("cls-unnormalized", "fp32", 0.5),
        ("cls-unnormalized", "int8", 0.5),
    ],
)
def test_sentence_transformers_runs_the_artifact_onnx(
    tiny_models, cls_unnormalized, data_files, tmp_path, source, precision, prune
):
    from sentence_transformers import SentenceTransformer

    folder = tiny_models("bert") if source == "mean-normalized" else cls_unnormalized
    artifact = _build(folder, tmp_path / "art", precision, edgec.read_dataset(data_files["calib"]), prune)
    _assert_no_pytorch_weights(artifact.path)
    model = SentenceTransformer(str(artifact.path), backend="onnx", device="cpu")
    assert model[0].auto_model.path.resolve() == (artifact.path / "model.onnx").resolve()  # the artifact's own file ran
    assert [type(m).__name__ for m in model] == ["Transformer", "Pooling"] + (
        ["Normalize"] if source == "mean-normalized" else []
    )
    theirs = model.encode(TEXTS, batch_size=len(TEXTS))
    mine = _edgec_run(artifact.path, TEXTS)["sentence_embedding"]
    _assert_same_vectors(mine, theirs)
    norms = np.linalg.norm(mine, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-4) == (source == "mean-normalized")


def test_optimum_feature_extraction_gives_the_token_states(tiny_models, data_files, tmp_path):
    import torch
    from optimum.onnxruntime import ORTModelForFeatureExtraction
    from transformers import AutoTokenizer

    artifact = _build(tiny_models("modernbert"), tmp_path / "art", "int8", edgec.read_dataset(data_files["calib"]))
    model = ORTModelForFeatureExtraction.from_pretrained(artifact.path)
    assert model.path.resolve() == (artifact.path / "model.onnx").resolve()
    max_length = artifact.manifest.recipe.max_length
    encoded = AutoTokenizer.from_pretrained(artifact.path)(
        TEXTS, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    states = model(**encoded).last_hidden_state  # (batch, seq, hidden)
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    pooled = torch.nn.functional.normalize(
        (states * mask).sum(1) / mask.sum(1), dim=1
    )  # the fixture's mean + Normalize
    _assert_same_vectors(_edgec_run(artifact.path, TEXTS)["sentence_embedding"], pooled.numpy())
    assert torch.is_tensor(states) and states.shape[:2] == encoded["input_ids"].shape


@pytest.fixture(scope="module")
def named_classifier(tiny_models, tmp_path_factory):
    """The tiny BERT classifier with class names, fitted briefly to the labelled sentences (label i % 3) so that its
    predictions differ from text to text (a random head gives every text the same class)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = shutil.copytree(
        tiny_models("bert", "sequence-classification"), tmp_path_factory.mktemp("clf") / "bert-clf"
    )
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    model.config.id2label = {0: "negative", 1: "neutral", 2: "positive"}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    encoded = AutoTokenizer.from_pretrained(folder)(SENTENCES, padding=True, return_tensors="pt")
    labels = torch.tensor([i % 3 for i in range(len(SENTENCES))])
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        model(**encoded, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_optimum_classifier_and_pipeline_match_edgec_run(named_classifier, data_files, tmp_path, precision):
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import pipeline

    artifact = _build(named_classifier, tmp_path / "art", precision, edgec.read_dataset(data_files["labels"]))
    _assert_no_pytorch_weights(artifact.path)
    model = ORTModelForSequenceClassification.from_pretrained(artifact.path)
    assert model.path.resolve() == (artifact.path / "model.onnx").resolve()
    predictions = pipeline("text-classification", model=model, tokenizer=str(artifact.path))(TEXTS)
    logits = _edgec_run(artifact.path, TEXTS)["logits"]
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    labels = artifact.manifest.labels
    assert [p["label"] for p in predictions] == [labels[str(i)] for i in probabilities.argmax(1)]
    np.testing.assert_allclose([p["score"] for p in predictions], probabilities.max(1), atol=1e-5)
    assert len({p["label"] for p in predictions}) > 1  # the comparison covers more than one class


def test_non_ort_targets_keep_one_output(tiny_models, data_files, tmp_path):
    """The token states are for ONNX Runtime's users; a TensorRT artifact's graph keeps its single output."""
    import onnx

    data = edgec.read_dataset(data_files["calib"])
    artifact = edgec.build(
        tiny_models("bert"),
        "trt-fp16",
        recipe=Recipe(quant=QuantConfig(precision="fp16")),
        calib=data,
        eval=data,
        out=tmp_path / "trt",
    )
    assert [o.name for o in onnx.load(str(artifact.model_path), load_external_data=False).graph.output] == [
        "sentence_embedding"
    ]
    assert not (artifact.path / "modules.json").exists()
