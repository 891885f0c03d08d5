"""Hidden-size pruning in the prune stage: width, heads the width holds, channels scored from activations."""

import copy
import dataclasses

import numpy as np
import pytest
import torch
from conftest import SENTENCES

from edgec.compression import surgery
from edgec.data import Dataset, Example
from edgec.errors import ConfigError
from edgec.ops import width
from edgec.ops.macs import encoder_macs, unit_costs
from edgec.recipe import PruneConfig
from edgec.running.inference import encode_batches
from edgec.source import load_source, save_pruned
from edgec.stages.prune import prune_source
from edgec.stages.prune_hidden import channel_scores

CALIB = Dataset(tuple(Example(t) for t in SENTENCES), "sentences")


def test_default_width_rounds_to_whole_heads():
    assert width.default_width(768, 64, 0.25) == 384  # 768 x 0.25^0.5
    assert width.default_width(768, 64, 0.12) == 256  # 266 -> 4 heads of 64
    assert width.default_width(32, 8, 0.001) == 8 and width.default_width(32, 8, 1.0) == 32
    with pytest.raises(ConfigError, match="multiple of the head size 64"):
        width.check_width(300, 768, 64)


def test_allowed_heads_per_layer_and_shared_columns():
    scores = [np.array([5.0, 1.0, 3.0, 2.0]), np.array([0.0, 4.0, 1.0, 9.0])]
    assert [a.tolist() for a in width.allowed_heads(scores, 2, None)] == [[0, 2], [1, 3]]
    # MPNet: columns 0..3 in layer 0; layer 1 kept heads reading columns 3, 1, 0, 2; column sums 5+2, 1+4, 3+9, 2+0
    columns = [np.arange(4), np.array([3, 1, 0, 2])]
    assert [a.tolist() for a in width.allowed_heads(scores, 2, columns)] == [[0, 2], [2, 3]]
    masks = width.expand(
        [np.array([True, False]), np.array([False, True])], [np.array([0, 2]), np.array([1, 3])], [4, 4]
    )
    assert [m.tolist() for m in masks] == [[True, False, False, False], [False, False, False, True]]


def test_channel_scores_follow_the_activations(tiny_models):
    source = load_source(tiny_models("bert"))
    model = copy.deepcopy(source.model)
    with torch.no_grad():  # channel 5 is zero after every LayerNorm: no energy
        for norm in [
            model.base_model.embeddings.LayerNorm,
            *(m for m in model.modules() if "LayerNorm" in type(m).__name__),
        ]:
            norm.weight[5], norm.bias[5] = 0.0, 0.0
    batches = encode_batches(source.tokenizer, CALIB, max_length=64)
    scores = channel_scores(model, batches, source.input_names)
    assert scores.shape == (32,) and scores[5] == 0.0 and (np.delete(scores, 5) > 0).all()


@pytest.mark.parametrize("model_type", ["bert", "mpnet", "distilbert"])
def test_prune_with_hidden_meets_the_budget_and_saves(tiny_models, model_type, tmp_path):
    source = load_source(tiny_models(model_type))
    config = PruneConfig(fraction=0.6, units=("heads", "ffn", "hidden"), hidden_size=16)
    result = prune_source(source, CALIB, config, max_length=64, seed=0)
    model, summary = result.model, result.summary
    assert summary.hidden_before == 32 and summary.hidden_after == surgery.hidden_size(model) == 16
    assert max(surgery.head_counts(model)) <= 2  # 16 channels hold 2 heads of 8
    if model_type == "mpnet":
        assert len({c for layer in surgery.bias_columns(model) for c in layer.tolist()}) <= 2
    assert summary.macs_after <= 0.4 * summary.macs_before * 1.0001
    lengths = [len(source.tokenizer(t)["input_ids"]) for t in SENTENCES]
    costs = unit_costs(lengths, 16, 8)
    assert summary.macs_after == pytest.approx(encoder_macs(summary.heads_after, summary.ffn_after, costs))
    assert_saved_folder_computes_the_same(source, model, summary, tmp_path)


def test_hidden_with_layers_in_the_kwon_flow(tiny_models, tmp_path):
    """Hidden channels, heads, neurons and whole layers under one budget: the width is kept, the heads fit it, the
    kept layers are named in the original numbering (their origins) and the folder reloads the same function."""
    source = load_source(tiny_models("bert"))
    config = PruneConfig(fraction=0.7, units=("heads", "ffn", "layers", "hidden"), hidden_size=16)
    result = prune_source(source, CALIB, config, max_length=64, seed=0)
    model, summary = result.model, result.summary
    assert summary.hidden_after == surgery.hidden_size(model) == 16 and max(surgery.head_counts(model)) <= 2
    assert summary.macs_after <= 0.3 * summary.macs_before * 1.0001
    assert sorted(summary.layers_kept + summary.layers_removed) == [0, 1]
    assert surgery.layer_origins(model) == summary.layers_kept and "hidden" in summary.seconds
    assert_saved_folder_computes_the_same(source, model, summary, tmp_path)


@pytest.mark.parametrize("model_type", ["bert", "mpnet"])
def test_a_layer_cap_sets_a_wide_shallow_shape_within_the_budget(tiny_models, model_type, tmp_path):
    """max_layers: a budget the search meets with both layers kept (a mild one) ends with one layer at a wider
    width, whose units the budget then leaves whole; the folder reloads the same function."""
    source = load_source(tiny_models(model_type))
    units = ("heads", "ffn", "layers", "hidden")
    uncapped = prune_source(
        source, CALIB, PruneConfig(fraction=0.3, units=units, hidden_size=24), max_length=64, seed=0
    )
    assert len(uncapped.summary.layers_kept) == 2
    config = PruneConfig(fraction=0.3, units=units, hidden_size=24, max_layers=1)
    result = prune_source(source, CALIB, config, max_length=64, seed=0)
    model, summary = result.model, result.summary
    assert len(summary.layers_kept) == len(surgery.encoder_layers(model)) == 1 and len(summary.layers_removed) == 1
    assert summary.hidden_after == 24 and summary.macs_after <= 0.7 * summary.macs_before * 1.0001
    assert_saved_folder_computes_the_same(source, model, summary, tmp_path)


def test_hidden_size_needs_the_hidden_unit():
    with pytest.raises(ConfigError, match="add hidden to --prune-units"):
        PruneConfig(fraction=0.5, hidden_size=16)


def assert_saved_folder_computes_the_same(source, model, summary, folder) -> None:
    """The pruned model saved with save_pruned and loaded back gives the same outputs."""
    save_pruned(dataclasses.replace(source, model=model), summary, folder)
    reloaded = load_source(folder).model
    encoded = source.tokenizer(SENTENCES[:5], padding=True, return_tensors="pt")
    with torch.no_grad():
        a, b = (m(**{k: encoded[k] for k in source.input_names})[0] for m in (model, reloaded))
    assert torch.allclose(a, b, atol=1e-5)
