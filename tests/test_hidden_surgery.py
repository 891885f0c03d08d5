"""Hidden-size removal equals masking the channels, where the masked reference's LayerNorms normalise over the kept
channels only (a plain mask would not: the mean and variance would still count the removed channels)."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from conftest import ARCHITECTURES, SENTENCES, make_tiny_model

import edgec
from edgec.artifacts.artifact_ops import predict
from edgec.compression import hidden_surgery, surgery
from edgec.source import load_source, save_model, task_outputs

KEEP = [0, 2, 3, 5, 8, 9, 13, 14, 17, 20, 21, 22, 26, 27, 29, 31]  # 16 of 32 channels: room for 2 heads of 8
TASKS = ("feature-extraction", "sequence-classification", "token-classification", "question-answering")


def masked_reference(model: torch.nn.Module, keep: list[int], kept_statistics: bool = True) -> list:
    """Hooks that turn `model` into the reference: the stream held at zero outside `keep`, every stream LayerNorm
    normalising over `keep` alone, and the head's square Linears' removed outputs at zero. Without
    `kept_statistics`, a plain mask: the LayerNorms' mean and variance still count every channel."""
    mask = torch.zeros(surgery.hidden_size(model))
    mask[keep] = 1.0
    index = torch.tensor(keep)

    def kept_channel_norm(norm, args, output):
        if not kept_statistics:
            return output * mask
        x = args[0]
        kept = x.index_select(-1, index)
        mean, var = kept.mean(-1, keepdim=True), kept.var(-1, unbiased=False, keepdim=True)
        return mask * (norm.weight * (x - mean) / torch.sqrt(var + norm.eps) + norm.bias)

    handles = [norm.register_forward_hook(kept_channel_norm) for norm in hidden_surgery.stream_norms(model)]
    writers = [w for w in hidden_surgery.stream_writers(model) if not isinstance(w, torch.nn.LayerNorm)]
    square, _ = hidden_surgery.head_linears(model)
    handles += [m.register_forward_hook(lambda m, a, out: out * mask) for m in writers + square]
    return handles


def outputs(model, source, task):
    encoded = source.tokenizer(SENTENCES[:6], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**{k: encoded[k] for k in source.input_names})
    return task_outputs(out, task, source.pooling, encoded["attention_mask"])


def pruned_units(model):
    """Heads and neurons removed first, with a layer left without heads and one without FFN (constants)."""
    surgery.keep_heads(model, 0, [1, 3])
    surgery.keep_heads(model, 1, [])
    surgery.keep_neurons(model, 0, [])
    surgery.keep_neurons(model, 1, [2, 7, 30, 41])
    return model


@pytest.mark.parametrize("model_type", hidden_surgery.HIDDEN_PRUNABLE)
@pytest.mark.parametrize("task", TASKS)
def test_channel_removal_equals_the_kept_channel_mask(tiny_models, model_type, task):
    source = load_source(tiny_models(model_type, task))
    reference = pruned_units(copy.deepcopy(source.model))
    pruned = copy.deepcopy(reference)
    hidden_surgery.keep_channels(pruned, KEEP)
    expected, plain = (reference_outputs(reference, source, task, kept) for kept in (True, False))
    got = outputs(pruned, source, task)
    for e, p, g in zip(expected, plain, got, strict=True):
        assert torch.allclose(g, e, atol=1e-5), (g - e).abs().max()
        assert not torch.allclose(g, p, atol=1e-3)  # a plain mask is not what removal computes
    assert surgery.hidden_size(pruned) == 16 and surgery.head_dim(pruned) == 8
    assert surgery.hidden_channels(pruned) == KEEP
    assert surgery.head_counts(pruned) == [2, 0] and surgery.ffn_widths(pruned) == [0, 4]


def reference_outputs(model, source, task, kept_statistics=True):
    """The masked reference's task outputs; an embedding is compared on the kept channels (zeros elsewhere)."""
    handles = masked_reference(model, KEEP, kept_statistics)
    try:
        expected = outputs(model, source, task)
    finally:
        for handle in handles:
            handle.remove()
    if task != "feature-extraction":
        return expected
    assert torch.allclose(expected[0][:, [c for c in range(32) if c not in KEEP]], torch.tensor(0.0))
    return (expected[0][:, KEEP],)


def test_removal_composes_and_records_original_channels(tiny_models):
    source = load_source(tiny_models("bert"))
    model = copy.deepcopy(source.model)
    hidden_surgery.keep_channels(model, KEEP)
    hidden_surgery.keep_channels(model, [0, 1, 15])
    assert surgery.hidden_channels(model) == [KEEP[0], KEEP[1], KEEP[15]]
    assert model.base_model.embeddings.word_embeddings.embedding_dim == 3


def test_electra_with_a_narrower_embedding_prunes_its_projection(tmp_path):
    import transformers

    folder = make_tiny_model(tmp_path / "electra", "electra", "sequence-classification")
    config = transformers.AutoConfig.from_pretrained(folder)
    config.embedding_size = 16
    transformers.AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    source = load_source(folder)
    pruned = copy.deepcopy(source.model)
    hidden_surgery.keep_channels(pruned, KEEP)
    expected = reference_outputs(source.model, source, source.task)
    assert torch.allclose(outputs(pruned, source, source.task)[0], expected[0], atol=1e-5)
    assert pruned.base_model.embeddings.word_embeddings.embedding_dim == 16  # the embedding itself is not the stream
    assert pruned.base_model.embeddings_project.out_features == 16 and pruned.config.embedding_size == 16


def layout_ready(model):
    """At most 2 heads per layer (16 channels hold 2 heads of 8), and for MPNet 2 position-bias columns in all."""
    surgery.keep_heads(model, 0, [1, 3])
    surgery.keep_heads(model, 1, [3])
    surgery.keep_neurons(model, 0, list(range(10)))
    hidden_surgery.keep_channels(model, KEEP)
    return model


@pytest.mark.parametrize("model_type", sorted(set(ARCHITECTURES) - set(hidden_surgery.HIDDEN_PRUNABLE)))
def test_architectures_whose_width_is_not_prunable_are_refused(tiny_models, model_type):
    source = load_source(tiny_models(model_type, "sequence-classification"))
    with pytest.raises(edgec.errors.UnsupportedModelError, match=f"not {model_type}; prune heads"):
        hidden_surgery.keep_channels(source.model, KEEP)


@pytest.mark.parametrize("model_type", hidden_surgery.HIDDEN_PRUNABLE)
def test_hidden_pruned_folder_reloads(tiny_models, model_type, tmp_path):
    import transformers

    source = load_source(tiny_models(model_type, "sequence-classification"))
    pruned = layout_ready(copy.deepcopy(source.model))
    save_model(dataclasses.replace(source, model=pruned), tmp_path, model=surgery.standard_layout(pruned))
    stock = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()  # no edgec code
    expected = outputs(pruned, source, source.task)[0]
    assert torch.allclose(outputs(stock, source, source.task)[0], expected, atol=1e-5)
    reloaded = load_source(tmp_path).model
    assert surgery.head_counts(reloaded) == [2, 1] and surgery.ffn_widths(reloaded) == [10, 64]
    assert surgery.hidden_size(reloaded) == 16 and surgery.hidden_channels(reloaded) == KEEP
    assert torch.allclose(outputs(reloaded, source, source.task)[0], expected, atol=1e-5)


def test_too_many_heads_for_the_width_is_a_clear_error(tiny_models):
    model = copy.deepcopy(load_source(tiny_models("bert")).model)
    hidden_surgery.keep_channels(model, KEEP)  # 4 heads of 8 kept, room for 2
    with pytest.raises(edgec.errors.UnsupportedModelError, match="more than the 2"):
        surgery.standard_layout(model)


@pytest.mark.parametrize("model_type", ["bert", "mpnet"])
def test_hidden_pruned_model_exports_quantizes_and_runs_in_onnx_runtime(tiny_models, data_files, model_type, tmp_path):
    source = load_source(tiny_models(model_type))
    pruned = layout_ready(copy.deepcopy(source.model))
    save_model(dataclasses.replace(source, model=pruned), tmp_path / "model", model=surgery.standard_layout(pruned))
    data = edgec.read_dataset(data_files["pairs"])
    for precision in ("fp32", "int8"):
        recipe = edgec.Recipe(quant=edgec.QuantConfig(precision=precision))
        artifact = edgec.build(
            tmp_path / "model", "ort", recipe=recipe, calib=data, eval=data, out=tmp_path / precision
        )
        assert artifact.manifest.parity.passed
        (embedding,) = predict(artifact, SENTENCES[:3]).values()
        assert embedding.shape == (3, 16)
        expected = outputs(pruned, source, source.task)[0][:3].numpy()
        cosine = (embedding * expected).sum(1) / np.linalg.norm(embedding, axis=1) / np.linalg.norm(expected, axis=1)
        assert cosine.min() > (0.9999 if precision == "fp32" else 0.95)
