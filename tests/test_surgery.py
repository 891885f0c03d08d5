"""Physical removal of heads and neurons: same function as masking them, for every architecture."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import ARCHITECTURES, SENTENCES

from edgec import surgery
from edgec.ops.importance import mask_heads, mask_neurons
from edgec.source import load_source

KEEP_HEADS = [[0, 2], []]  # layer 1 loses every head
KEEP_NEURONS = [[], [1, 5, 9, 60]]  # layer 0 loses its whole FFN


def _masked(model, keep_heads, keep_neurons):
    """The unpruned model with removed units' outputs multiplied by zero (what pruning must equal)."""
    parts, handles = surgery.parts_for(model), []
    for layer, heads, neurons in zip(surgery.encoder_layers(model), keep_heads, keep_neurons):
        head_mask = torch.zeros(1, 4)
        head_mask[0, heads] = 1.0
        neuron_mask = torch.zeros(1, 64)
        neuron_mask[0, neurons] = 1.0
        handles.append(surgery.get(layer, parts.attn_out).register_forward_pre_hook(lambda m, a, k=head_mask: (mask_heads(a[0], k),)))
        handles.append(surgery.get(layer, parts.ffn_out).register_forward_pre_hook(lambda m, a, k=neuron_mask: (mask_neurons(a[0], k),)))
    return handles


def _outputs(source, model):
    encoded = source.tokenizer(SENTENCES[:6], padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**{k: encoded[k] for k in source.input_names})[0]


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_removal_equals_masking_and_shrinks_the_matrices(tiny_models, model_type):
    source = load_source(tiny_models(model_type))
    pruned = copy.deepcopy(source.model)
    for i, (heads, neurons) in enumerate(zip(KEEP_HEADS, KEEP_NEURONS)):
        surgery.keep_heads(pruned, i, heads)
        surgery.keep_neurons(pruned, i, neurons)
    handles = _masked(source.model, KEEP_HEADS, KEEP_NEURONS)
    try:
        expected = _outputs(source, source.model)
    finally:
        for handle in handles:
            handle.remove()
    assert torch.allclose(_outputs(source, pruned), expected, atol=1e-5)
    assert surgery.head_counts(pruned) == [2, 0] and surgery.ffn_widths(pruned) == [0, 4]
    parts = surgery.parts_for(pruned)
    layer = surgery.encoder_layers(pruned)[0]
    assert surgery.get(layer, parts.query).out_features == 2 * surgery.head_dim(pruned)
    assert surgery.get(layer, parts.attn_out).in_features == 2 * surgery.head_dim(pruned)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in source.model.parameters())


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_standard_layout_loads_in_transformers_and_pads_back_out(tiny_models, model_type, tmp_path):
    import transformers

    source = load_source(tiny_models(model_type))
    pruned = copy.deepcopy(source.model)
    surgery.keep_heads(pruned, 0, [1, 3])
    surgery.keep_heads(pruned, 1, [])
    surgery.keep_neurons(pruned, 0, list(range(10)))
    surgery.keep_neurons(pruned, 1, [])
    surgery.standard_layout(pruned).save_pretrained(tmp_path, safe_serialization=True)
    source.tokenizer.save_pretrained(tmp_path)
    reloaded = transformers.AutoModel.from_pretrained(tmp_path).eval()  # stock transformers, no edgec code
    assert torch.allclose(_outputs(source, reloaded), _outputs(source, pruned), atol=1e-5)
    edgec_view = load_source(tmp_path).model  # the padding units are removed again on load
    assert surgery.head_counts(edgec_view) == [2, 0] and surgery.ffn_widths(edgec_view) == [10, 0]
    assert torch.allclose(_outputs(source, edgec_view), _outputs(source, pruned), atol=1e-5)


def test_unpruned_models_have_no_dead_units(tiny_models):
    model = load_source(tiny_models("bert")).model
    assert surgery.dead_units(model) == ({}, {})
    assert surgery.head_counts(model) == [4, 4] and surgery.ffn_widths(model) == [64, 64]


def _skipping(model, skipped: int):
    """A hook making layer `skipped` return its input: what removing the layer must equal."""
    layer = surgery.encoder_layers(model)[skipped]
    return layer.register_forward_hook(lambda module, args, output: (args[0], *output[1:]) if isinstance(output, tuple) else args[0])


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_layer_removal_equals_skipping_the_layer(tiny_models, model_type):
    source = load_source(tiny_models(model_type))
    pruned = copy.deepcopy(source.model)
    surgery.keep_heads(pruned, 1, [0, 3])  # the surviving layer keeps its own unit edits
    surgery.keep_layers(pruned, [1])
    reference = copy.deepcopy(source.model)
    surgery.keep_heads(reference, 1, [0, 3])
    handle = _skipping(reference, 0)
    try:
        expected = _outputs(source, reference)
    finally:
        handle.remove()
    assert torch.allclose(_outputs(source, pruned), expected, atol=1e-5)
    assert len(surgery.encoder_layers(pruned)) == 1 and surgery.head_counts(pruned) == [2]
    assert (pruned.config.n_layers if model_type == "distilbert" else pruned.config.num_hidden_layers) == 1
    assert surgery.layer_origins(pruned) == [1]  # distillation pairs the kept layer with the teacher's layer 1


@pytest.mark.parametrize("model_type", ["bert", "distilbert", "mpnet"])
def test_removed_layers_save_and_load_as_a_smaller_hf_folder(tiny_models, model_type, tmp_path):
    import transformers

    source = load_source(tiny_models(model_type))
    pruned = copy.deepcopy(source.model)
    surgery.keep_neurons(pruned, 0, list(range(20)))
    surgery.keep_layers(pruned, [0])
    surgery.standard_layout(pruned).save_pretrained(tmp_path, safe_serialization=True)
    source.tokenizer.save_pretrained(tmp_path)
    reloaded = transformers.AutoModel.from_pretrained(tmp_path).eval()
    assert len(surgery.encoder_layers(reloaded)) == 1
    assert torch.allclose(_outputs(source, reloaded), _outputs(source, pruned), atol=1e-5)
    assert surgery.ffn_widths(load_source(tmp_path).model) == [20]
