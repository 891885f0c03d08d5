"""The prune stage on tiny models of every architecture: budgets, identity, least squares, export."""

from __future__ import annotations

import onnx
import pytest
import torch
from conftest import ARCHITECTURES, SENTENCES
from onnx import numpy_helper

import edgec
from edgec.compression import surgery
from edgec.data import Dataset, Example, read_dataset
from edgec.recipe import ParityThresholds, PruneConfig, QuantConfig, Recipe, TuningConfig
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
    removed = 1 - summary.macs_after / summary.macs_before
    assert fraction <= removed <= fraction + 0.03, removed  # the budget is a ceiling; one unit of slack at most
    assert summary.heads_after == surgery.head_counts(model) and summary.ffn_after == surgery.ffn_widths(model)
    parts, size = surgery.parts_for(model), surgery.head_dim(model)
    for layer, heads, width in zip(surgery.encoder_layers(model), summary.heads_after, summary.ffn_after):
        thirds, halves = 3 if parts.qkv_fused else 1, 2 if parts.ffn_gated else 1  # ModernBERT's fused Wqkv, gated Wi
        if heads:
            assert surgery.get(layer, parts.key).out_features == thirds * heads * size
            assert surgery.get(layer, parts.attn_out).in_features == heads * size
        if width:
            assert surgery.get(layer, parts.ffn_in).out_features == halves * width
            assert surgery.get(layer, parts.ffn_out).in_features == width
    assert summary.params_after < summary.params_before
    assert torch.isfinite(_embed(source, model)).all()


@pytest.mark.parametrize("model_type", ["bert", "mpnet"])
def test_pruning_in_steps_meets_the_budget_and_records_each_step(tiny_models, model_type):
    """Two steps: the first keeps √(1 - fraction) of the MACs, the second the rest of the way; the note keeps the
    unpruned model's 'before' figures and a row per step."""
    source = load_source(tiny_models(model_type))
    one = prune_source(source, CALIB, PruneConfig(fraction=0.6, steps=1), max_length=64, seed=0).summary
    result = prune_source(source, CALIB, PruneConfig(fraction=0.6, steps=2), max_length=64, seed=0)
    summary = result.summary
    assert 0.6 <= 1 - summary.macs_after / summary.macs_before <= 0.63
    assert (summary.macs_before, summary.heads_before, summary.ffn_before, summary.fraction) == (
        one.macs_before,
        one.heads_before,
        one.ffn_before,
        0.6,
    )
    first, second = summary.steps
    assert first.fraction == pytest.approx(1 - 0.4**0.5, abs=1e-4) and first.macs_after > second.macs_after
    assert second.macs_after == summary.macs_after and one.steps is None
    assert summary.heads_after == surgery.head_counts(result.model)
    assert torch.isfinite(_embed(source, result.model)).all()


def test_zero_budget_is_the_identity(tiny_models):
    source = load_source(tiny_models("bert"))
    result = prune_source(source, CALIB, PruneConfig(fraction=0.0), max_length=64, seed=0)
    assert result.summary.heads_after == result.summary.heads_before
    assert result.summary.ffn_after == result.summary.ffn_before
    assert torch.equal(_embed(source, result.model), _embed(source, source.model))


@pytest.mark.parametrize("model_type", ["bert", "distilbert", "mpnet", "modernbert", "deberta-v2"])
def test_least_squares_lowers_the_layer_reconstruction_error(tiny_models, model_type):
    source = load_source(tiny_models(model_type))
    fits = prune_source(source, CALIB, PruneConfig(fraction=0.5), max_length=64, seed=0).summary.least_squares
    assert fits and all(f["error_after"] <= f["error_before"] for f in fits)
    assert any(f["error_after"] < 0.99 * f["error_before"] for f in fits)


@pytest.mark.parametrize("model_type", ["bert", "mpnet", "modernbert"])
def test_weight_refit_lowers_the_error_it_targets_and_brings_the_model_closer(tiny_models, model_type):
    source = load_source(tiny_models(model_type))
    reference = _embed(source, source.model)
    refit = PruneConfig(fraction=0.5, tuning=TuningConfig(fit="weights"))
    result = prune_source(source, CALIB, refit, max_length=64, seed=0)
    fits = result.summary.least_squares
    assert fits and all(f["error_after"] <= f["error_before"] for f in fits)
    assert any(f["error_after"] < 0.9 * f["error_before"] for f in fits)
    plain = prune_source(source, CALIB, PruneConfig(fraction=0.5, rescale=False), max_length=64, seed=0).model
    cosine = lambda model: torch.nn.functional.cosine_similarity(_embed(source, model), reference).mean()  # noqa: E731
    assert cosine(result.model) > cosine(plain)


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
    assert with_labels.macs_after <= with_labels.macs_before * 0.5
    assert (with_labels.heads_after, with_labels.ffn_after) != (without.heads_after, without.ffn_after)


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_pruned_build_exports_fuses_and_runs(tiny_models, data_files, tmp_path, model_type):
    recipe = Recipe(prune=PruneConfig(fraction=0.6), quant=QuantConfig(precision="fp32"), parity=LOOSE)
    artifact = edgec.build(
        tiny_models(model_type), "ort-x86", recipe=recipe, calib=read_dataset(data_files["calib"]), out=tmp_path / "a"
    )
    ledger = artifact.manifest.parity.ledger
    assert [row.stage for row in ledger] == ["prune", "export", "optimize", "artifact"]
    # ONNX Runtime computes what the pruned PyTorch model computes
    assert abs(ledger[-1].metrics["cosine_mean"] - ledger[0].metrics["cosine_mean"]) < 1e-4
    # The weights shrink. (Not always the file: DeBERTa's relative-attention graph alone outweighs a 32-wide model.)
    graph = onnx.load(str(artifact.model_path)).graph
    weights = sum(numpy_helper.to_array(t).nbytes for t in graph.initializer)
    assert weights < artifact.manifest.sizes.source_weights_bytes
    assert (artifact.path / "pruning.png").stat().st_size > 0
    assert "heads kept per layer" in (artifact.path / "report.md").read_text()


def test_pruned_int8_build_with_distillation(tiny_models, data_files, tmp_path):
    recipe = Recipe(
        prune=PruneConfig(fraction=0.5),
        distill=edgec.DistillConfig(steps=6, batch_size=8, eval_every=3, precision="fp32"),
        quant=QuantConfig(precision="int8"),
        parity=LOOSE,
    )
    calib = read_dataset(data_files["calib"])
    artifact = edgec.build(tiny_models("bert"), "ort-x86", recipe=recipe, calib=calib, train=calib, out=tmp_path / "a")
    stages = [row.stage for row in artifact.manifest.parity.ledger]
    assert stages[:3] == ["prune", "distill", "export"] and "quantize" in stages
    assert artifact.manifest.stages.distill.steps == 6


@pytest.mark.parametrize("model_type", ["bert", "distilbert", "mpnet"])
def test_removed_layers_leave_the_export_which_fuses_and_runs(tiny_models, data_files, tmp_path, model_type):
    import onnx

    recipe = Recipe(
        prune=PruneConfig(fraction=0.5, units=("layers",)), quant=QuantConfig(precision="fp32"), parity=LOOSE
    )
    artifact = edgec.build(
        tiny_models(model_type), "ort-x86", recipe=recipe, calib=read_dataset(data_files["calib"]), out=tmp_path / "a"
    )
    summary = artifact.manifest.stages.prune
    assert len(summary.layers_removed) == 1 and len(summary.layers_kept) == 1  # half the compute: one of two layers
    ledger = artifact.manifest.parity.ledger
    assert [row.stage for row in ledger] == ["prune", "export", "optimize", "artifact"]
    assert abs(ledger[-1].metrics["cosine_mean"] - ledger[0].metrics["cosine_mean"]) < 1e-4
    graph = onnx.load(str(artifact.model_path)).graph
    norms = sum(node.op_type in ("LayerNormalization", "SkipLayerNormalization") for node in graph.node)
    assert norms <= 3  # embeddings + the kept layer's two (the unpruned model has five)
    assert f"**layers removed**: {summary.layers_removed[0]} (of 0-1" in (artifact.path / "report.md").read_text()


@pytest.mark.parametrize("model_type", ["modernbert", "deberta-v2"])
def test_half_pruned_new_architectures_pass_the_default_gate(tiny_models, data_files, tmp_path, model_type):
    """`edgec build --prune 0.5` with the target's own thresholds (its default int8, the [pruned] gate) passes.

    The gate judges closeness on the calibration texts: a random tiny model's Spearman on the 20 scored pairs
    moves by one rank swap (2.7 points, over max_drop) with int8 alone, pruned or not, so it says nothing here."""
    from conftest import invoke

    out = tmp_path / "half"
    result = invoke(
        "build",
        tiny_models(model_type),
        "--target",
        "ort-x86",
        "--prune",
        "0.5",
        "--calib",
        data_files["calib"],
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    manifest = edgec.load_artifact(out).manifest
    assert manifest.parity.passed and manifest.precision == "int8"
    summary = manifest.stages.prune
    assert summary.macs_after <= 0.5 * summary.macs_before
