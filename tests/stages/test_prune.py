"""The prune stage on tiny models of every architecture: budgets, identity, least squares, export."""

from __future__ import annotations

import pytest
import torch
from conftest import ARCHITECTURES, SENTENCES

import edgec
from edgec import surgery
from edgec.data import Dataset, Example, read_dataset
from edgec.recipe import ParityThresholds, PruneConfig, QuantConfig, Recipe
from edgec.source import load_source
from edgec.stages.prune import prune_source

CALIB = Dataset(tuple(Example(t) for t in SENTENCES), "sentences")
LOOSE = ParityThresholds(min_cosine=0.0, min_agreement=0.0, max_drop=100.0)


def _embed(source, model):
    encoded = source.tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**{k: encoded[k] for k in source.input_names})[0]


@pytest.mark.parametrize("model_type", ARCHITECTURES)
@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9])
def test_budget_is_met_and_shapes_are_consistent(tiny_models, model_type, fraction):
    source = load_source(tiny_models(model_type))
    result = prune_source(source, CALIB, PruneConfig(fraction=fraction), max_length=64, seed=0)
    summary, model = result.summary, result.model
    removed = 1 - summary["macs_after"] / summary["macs_before"]
    assert fraction <= removed <= fraction + 0.03, removed  # the budget is a ceiling; one unit of slack at most
    assert summary["heads_after"] == surgery.head_counts(model) and summary["ffn_after"] == surgery.ffn_widths(model)
    parts, size = surgery.parts_for(model), surgery.head_dim(model)
    for layer, heads, width in zip(surgery.encoder_layers(model), summary["heads_after"], summary["ffn_after"]):
        if heads:
            assert surgery.get(layer, parts.key).out_features == heads * size == surgery.get(layer, parts.attn_out).in_features
        if width:
            assert surgery.get(layer, parts.ffn_in).out_features == width == surgery.get(layer, parts.ffn_out).in_features
    assert summary["params_after"] < summary["params_before"]
    assert torch.isfinite(_embed(source, model)).all()


def test_zero_budget_is_the_identity(tiny_models):
    source = load_source(tiny_models("bert"))
    result = prune_source(source, CALIB, PruneConfig(fraction=0.0), max_length=64, seed=0)
    assert result.summary["heads_after"] == result.summary["heads_before"]
    assert result.summary["ffn_after"] == result.summary["ffn_before"]
    assert torch.equal(_embed(source, result.model), _embed(source, source.model))


@pytest.mark.parametrize("model_type", ["bert", "distilbert", "mpnet"])
def test_least_squares_lowers_the_layer_reconstruction_error(tiny_models, model_type):
    source = load_source(tiny_models(model_type))
    fits = prune_source(source, CALIB, PruneConfig(fraction=0.5), max_length=64, seed=0).summary["least_squares"]
    assert fits and all(f["error_after"] <= f["error_before"] for f in fits)
    assert any(f["error_after"] < 0.99 * f["error_before"] for f in fits)


def test_rescaling_brings_the_pruned_model_closer(tiny_models):
    source = load_source(tiny_models("bert"))
    reference = _embed(source, source.model)
    plain = prune_source(source, CALIB, PruneConfig(fraction=0.5, rescale=False), max_length=64, seed=0).model
    rescaled = prune_source(source, CALIB, PruneConfig(fraction=0.5), max_length=64, seed=0).model
    cosine = lambda model: torch.nn.functional.cosine_similarity(_embed(source, model), reference).mean()  # noqa: E731
    assert cosine(rescaled) > cosine(plain)


def test_classifier_importance_uses_the_labels(tiny_models, data_files):
    source = load_source(tiny_models("bert", "sequence-classification"))
    labelled = read_dataset(data_files["labels"])
    with_labels = prune_source(source, labelled, PruneConfig(fraction=0.5), max_length=64, seed=0).summary
    without = prune_source(source, CALIB, PruneConfig(fraction=0.5), max_length=64, seed=0).summary
    assert with_labels["macs_after"] <= with_labels["macs_before"] * 0.5
    assert (with_labels["heads_after"], with_labels["ffn_after"]) != (without["heads_after"], without["ffn_after"])


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_pruned_build_exports_fuses_and_runs(tiny_models, data_files, tmp_path, model_type):
    recipe = Recipe(prune=PruneConfig(fraction=0.6), quant=QuantConfig(precision="fp32"), parity=LOOSE)
    artifact = edgec.build(tiny_models(model_type), "ort-x86", recipe=recipe, calib=read_dataset(data_files["calib"]), out=tmp_path / "a")
    ledger = artifact.manifest["parity"]["ledger"]
    assert [row["stage"] for row in ledger] == ["prune", "export", "optimize", "artifact"]
    # ONNX Runtime computes what the pruned PyTorch model computes
    assert abs(ledger[-1]["metrics"]["cosine_mean"] - ledger[0]["metrics"]["cosine_mean"]) < 1e-4
    assert artifact.manifest["sizes"]["model_bytes"] < artifact.manifest["sizes"]["source_weights_bytes"]
    assert (artifact.path / "pruning.png").stat().st_size > 0
    assert "heads kept per layer" in (artifact.path / "report.md").read_text()


def test_pruned_int8_build_with_distillation(tiny_models, data_files, tmp_path):
    recipe = Recipe(prune=PruneConfig(fraction=0.5), distill=edgec.DistillConfig(steps=6, batch_size=8, eval_every=3, precision="fp32"),
                    quant=QuantConfig(precision="int8"), parity=LOOSE)
    calib = read_dataset(data_files["calib"])
    artifact = edgec.build(tiny_models("bert"), "ort-x86", recipe=recipe, calib=calib, train=calib, out=tmp_path / "a")
    stages = [row["stage"] for row in artifact.manifest["parity"]["ledger"]]
    assert stages[:3] == ["prune", "distill", "export"] and "quantize" in stages
    assert artifact.manifest["stages"]["distill"]["steps"] == 6
