"""Physical removal of heads and neurons: same function as masking them, for every architecture."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import ARCHITECTURES, SENTENCES

from edgec.compression import surgery
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
        handles.append(
            surgery.get(layer, parts.attn_out).register_forward_pre_hook(
                lambda m, a, k=head_mask: (mask_heads(a[0], k),)
            )
        )
        handles.append(
            surgery.get(layer, parts.ffn_out).register_forward_pre_hook(
                lambda m, a, k=neuron_mask: (mask_neurons(a[0], k),)
            )
        )
    return handles


def _masked_outputs(source, keep_heads, keep_neurons):
    handles = _masked(source.model, keep_heads, keep_neurons)
    try:
        return _outputs(source, source.model)
    finally:
        for handle in handles:
            handle.remove()


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
    assert torch.allclose(_outputs(source, pruned), _masked_outputs(source, KEEP_HEADS, KEEP_NEURONS), atol=1e-5)
    assert surgery.head_counts(pruned) == [2, 0] and surgery.ffn_widths(pruned) == [0, 4]
    parts = surgery.parts_for(pruned)
    layer = surgery.encoder_layers(pruned)[0]
    thirds = 3 if parts.qkv_fused else 1  # ModernBERT's Wqkv holds Q, K and V rows of each kept head
    assert surgery.get(layer, parts.query).out_features == thirds * 2 * surgery.head_dim(pruned)
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
    return layer.register_forward_hook(
        lambda module, args, output: (args[0], *output[1:]) if isinstance(output, tuple) else args[0]
    )


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


def test_deberta_without_shared_position_keys_prunes_its_position_projections(tiny_models, tmp_path):
    """DeBERTa with share_att_key off projects relative positions with their own per-head Linears."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(tiny_models("deberta-v2"))
    config.share_att_key = False
    torch.manual_seed(0)
    transformers.AutoModel.from_config(config).save_pretrained(tmp_path)
    for name in ("spm.model", "tokenizer_config.json", "special_tokens_map.json"):
        (tmp_path / name).write_bytes((tiny_models("deberta-v2") / name).read_bytes())
    source = load_source(tmp_path)
    pruned = copy.deepcopy(source.model)
    surgery.keep_heads(pruned, 0, [1, 2])
    layer = surgery.encoder_layers(pruned)[0]
    assert surgery.get(layer, "attention.self.pos_key_proj").out_features == 2 * surgery.head_dim(pruned)
    masked = _masked_outputs(source, [[1, 2], [0, 1, 2, 3]], [list(range(64))] * 2)
    assert torch.allclose(_outputs(source, pruned), masked, atol=1e-5)


def test_least_squares_biases_survive_the_standard_layout(tiny_models, data_files, tmp_path):
    """ModernBERT has no biases; least squares gives its pruned projections some, and the saved folder keeps them."""
    import transformers

    from edgec.data import read_dataset
    from edgec.recipe import PruneConfig, TuningConfig
    from edgec.stages.prune import prune_source

    source = load_source(tiny_models("modernbert"))
    calib = read_dataset(data_files["calib"])
    config = PruneConfig(fraction=0.5, tuning=TuningConfig(fit_bias=True))  # mask tuning shifts the output biases
    pruned = prune_source(source, calib, config, max_length=64, seed=0).model
    parts = surgery.parts_for(pruned)
    assert any(
        surgery.get(layer, parts.attn_out).bias is not None
        for layer in surgery.encoder_layers(pruned)
        if surgery.head_counts(pruned)[surgery.encoder_layers(pruned).index(layer)]
    )
    surgery.standard_layout(pruned).save_pretrained(tmp_path, safe_serialization=True)
    reloaded = transformers.AutoModel.from_pretrained(tmp_path).eval()
    assert reloaded.config.attention_bias and reloaded.config.mlp_bias
    assert torch.allclose(_outputs(source, reloaded), _outputs(source, pruned), atol=1e-5)


def test_a_modernbert_without_some_layers_is_not_saved_renumbered(tiny_models):
    """Its layers alternate local and global attention by index: a smaller config would change which is which."""
    from edgec.errors import UnsupportedModelError

    pruned = copy.deepcopy(load_source(tiny_models("modernbert")).model)
    surgery.keep_layers(pruned, [1])
    with pytest.raises(UnsupportedModelError, match="ModernBERT with whole layers removed"):
        surgery.standard_layout(pruned)
