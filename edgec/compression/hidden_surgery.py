"""Hidden-size removal: channels of the residual stream taken out of the whole encoder, as Minitron prunes width.

The stream (width `hidden`) runs from the embeddings through every layer to the task head. Removing channel c
removes column c of every embedding table (ELECTRA with a narrower embedding: row c of its projection), entry c of
every LayerNorm over the stream, input column c of every Linear that reads it (Q, K, V, FFN in, the head) and output
row c of every Linear that writes it (attention and FFN outputs, the pooler's and head's square Linear). A
LayerNorm then normalises over the kept channels only, so the pruned model computes exactly what the unpruned one
computes with the removed channels held at zero everywhere and every LayerNorm's mean and variance taken over the
kept channels. MPNet's relative position bias depends on heads and buckets, not on the width: it stays as it is.
"""

from __future__ import annotations

import torch
from torch import nn

from edgec.compression.surgery import (
    ConstantAttention,
    ConstantFFN,
    _set,
    _slice_linear,
    encoder_layers,
    get,
    head_dim,
    hidden_channels,
    hidden_size,
    parts_for,
)
from edgec.errors import UnsupportedModelError

# Task heads, as attribute paths from the task model or its base model: square Linears (hidden -> hidden) lose
# inputs and outputs, the others only inputs.
_SQUARE_HEADS = ("pooler.dense", "classifier.dense", "pre_classifier")
_READING_HEADS = ("classifier", "classifier.out_proj", "qa_outputs")

# ModernBERT's and DeBERTa's streams have readers this module does not slice (ModernBERT's final norm and gated FFN,
# DeBERTa's relative-position projections), so their width is not prunable here.
HIDDEN_PRUNABLE = ("bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra")


def check_prunable(model: nn.Module) -> None:
    """UnsupportedModelError unless the model's hidden size can be pruned."""
    if model.config.model_type not in HIDDEN_PRUNABLE:
        raise UnsupportedModelError(
            f"hidden-size pruning supports {', '.join(HIDDEN_PRUNABLE)}, not {model.config.model_type}; "
            "prune heads, FFN neurons or layers (--prune-units heads,ffn,layers)"
        )


def stream_norms(model: nn.Module) -> list[nn.LayerNorm]:
    """The LayerNorms over the residual stream, in forward order (the embeddings' first where it is the stream's)."""
    parts, base = parts_for(model), model.base_model
    first = [] if hasattr(base, "embeddings_project") else [base.embeddings.LayerNorm]
    return first + [get(layer, path) for layer in encoder_layers(model) for path in (parts.attn_norm, parts.ffn_norm)]


def stream_writers(model: nn.Module) -> list[nn.Module]:
    """Modules whose output is the stream itself, before any layer: the first of stream_norms, or ELECTRA's
    embedding projection."""
    base = model.base_model
    return [base.embeddings_project] if hasattr(base, "embeddings_project") else [base.embeddings.LayerNorm]


def head_linears(model: nn.Module) -> tuple[list[nn.Linear], list[nn.Linear]]:
    """(square, reading) Linears of the pooler and task head that meet the stream."""
    width = hidden_size(model)
    roots = dict.fromkeys((model, model.base_model))
    found = lambda paths: [  # noqa: E731
        m for p in paths for root in roots if isinstance(m := _find(root, p), nn.Linear) and m.in_features == width
    ]
    square = [m for m in found(_SQUARE_HEADS) if m.out_features == width]
    return square, [m for m in found(_READING_HEADS) if m not in square]


@torch.no_grad()
def keep_channels(model: nn.Module, keep: list[int]) -> None:
    """Keep only hidden channels `keep` (current numbering) everywhere; the config records the new width, the head
    size (which transformers derives from the width) and the kept channels' original indices."""
    check_prunable(model)
    index = torch.tensor(sorted(keep))
    if not len(index):
        raise ValueError("an encoder keeps at least one hidden channel")
    parts, base, config = parts_for(model), model.base_model, model.config
    origins, size = hidden_channels(model) or list(range(hidden_size(model))), head_dim(model)
    square, reading = head_linears(model)
    for root in dict.fromkeys((model, base)):  # a bare encoder is its own base model
        for path in (*_SQUARE_HEADS, *_READING_HEADS):
            module = _find(root, path)
            if module in square:
                _set(root, path, _slice_linear(_slice_linear(module, index, 1), index, 0))
            elif module in reading:
                _set(root, path, _slice_linear(module, index, 1))
    _slice_embeddings(base, index)
    for layer in encoder_layers(model):
        readers = (parts.query, parts.key, parts.value)
        _slice_sublayer(layer, parts.attention, readers, parts.attn_out, ConstantAttention, index)
        _slice_sublayer(layer, parts.ffn, (parts.ffn_in,), parts.ffn_out, ConstantFFN, index)
        for path in (parts.attn_norm, parts.ffn_norm):
            _set(layer, path, _slice_norm(get(layer, path), index))
    setattr(config, "dim" if config.model_type == "distilbert" else "hidden_size", len(index))
    if config.model_type == "electra" and not hasattr(base, "embeddings_project"):
        config.embedding_size = len(index)  # the embeddings are the stream: they narrow with it
    config.edgec_head_dim = size
    config.edgec_channels = [origins[i] for i in index.tolist()]


def _slice_sublayer(
    layer: nn.Module, module_path: str, readers: tuple[str, ...], writer: str, constant: type, index: torch.Tensor
) -> None:
    """Attention or FFN: inputs of its reading Linears, outputs of its writing one (or a constant's bias)."""
    module = get(layer, module_path)
    if isinstance(module, constant):
        module.bias = nn.Parameter(module.bias.detach()[index].clone())
        return
    for path in readers:
        _set(layer, path, _slice_linear(get(layer, path), index, 1))
    _set(layer, writer, _slice_linear(get(layer, writer), index, 0))


def _slice_embeddings(base: nn.Module, index: torch.Tensor) -> None:
    if hasattr(base, "embeddings_project"):  # ELECTRA, embedding narrower than the stream: the projection writes it
        base.embeddings_project = _slice_linear(base.embeddings_project, index, 0)
        return
    embeddings = base.embeddings
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        table = getattr(embeddings, name, None)
        if isinstance(table, nn.Embedding):
            new = nn.Embedding(
                table.num_embeddings, len(index), padding_idx=table.padding_idx, dtype=table.weight.dtype
            )
            new.weight.data.copy_(table.weight.detach()[:, index])
            setattr(embeddings, name, new)
    embeddings.LayerNorm = _slice_norm(embeddings.LayerNorm, index)


def _slice_norm(norm: nn.LayerNorm, index: torch.Tensor) -> nn.LayerNorm:
    new = nn.LayerNorm(len(index), eps=norm.eps, elementwise_affine=norm.elementwise_affine, dtype=norm.weight.dtype)
    if norm.elementwise_affine:
        new.weight.data.copy_(norm.weight.detach()[index])
        new.bias.data.copy_(norm.bias.detach()[index])
    return new


def _find(root: nn.Module, path: str) -> nn.Module | None:
    try:
        return get(root, path)
    except AttributeError:
        return None
