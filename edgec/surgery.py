"""Physical edits of Hugging Face encoders: where each layer's heads and FFN neurons live, and removing them.

Every supported architecture is a stack of post-LayerNorm layers: attention (Q, K, V, output projection)
then an FFN (in, activation, out), each followed by residual + LayerNorm. A head is a block of
`head_dim` rows of Q/K/V and the same columns of the output projection; an FFN neuron is a row of the
FFN's input Linear and a column of its output Linear. A sub-layer that loses all its units becomes its
output bias (what the masked sub-layer computes), so its residual + LayerNorm stay and the graph has no
zero-sized tensors. A removed layer leaves the encoder's layer list (its input passes straight on).

Each unit kind has one removal function (keep_heads, keep_neurons, keep_layers) and `apply_plan` runs them
in an order where indices stay valid: units inside layers first, then the layers.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edgec.errors import UnsupportedModelError
from edgec.ops.layer_search import Plan


@dataclass(frozen=True)
class Parts:
    """Attribute paths inside one encoder layer module."""

    attention: str
    """The module computing the attention output before the residual (replaced when no head is left)."""
    query: str
    key: str
    value: str
    attn_out: str
    attn_norm: str
    """The LayerNorm after the attention residual (its input is x + attention(x))."""
    ffn_in: str
    ffn_out: str
    ffn_norm: str
    ffn: str
    """The module mapping the attention output to the FFN output (replaced when no neuron is left)."""
    heads_attr: str
    """Head count attribute of the attention module."""
    width_attr: str
    """heads x head_dim attribute of the attention module."""


_BERT = Parts("attention.self", "attention.self.query", "attention.self.key", "attention.self.value",
              "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense", "output.dense",
              "output.LayerNorm", "intermediate", "num_attention_heads", "all_head_size")
_MPNET = Parts("attention.attn", "attention.attn.q", "attention.attn.k", "attention.attn.v", "attention.attn.o",
               "attention.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm", "intermediate",
               "num_attention_heads", "all_head_size")
_DISTILBERT = Parts("attention", "attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin",
                    "sa_layer_norm", "ffn.lin1", "ffn.lin2", "output_layer_norm", "ffn", "n_heads", "dim")
PARTS = {"bert": _BERT, "roberta": _BERT, "xlm-roberta": _BERT, "electra": _BERT, "mpnet": _MPNET, "distilbert": _DISTILBERT}


class ConstantAttention(nn.Module):
    """An attention sub-layer with no heads left: its output is the output projection's bias."""

    def __init__(self, bias: torch.Tensor):
        super().__init__()
        self.bias = nn.Parameter(bias.detach().clone())

    def forward(self, hidden_states=None, *args, query=None, **kwargs):  # DistilBERT passes query=
        x = hidden_states if hidden_states is not None else query
        return (self.bias.expand(*x.shape[:-1], -1),)


class ConstantFFN(nn.Module):
    """An FFN with no neurons left: its output is the second Linear's bias."""

    def __init__(self, bias: torch.Tensor):
        super().__init__()
        self.bias = nn.Parameter(bias.detach().clone())

    def forward(self, x):
        return self.bias.expand(*x.shape[:-1], -1)


def parts_for(model: nn.Module) -> Parts:
    model_type = model.config.model_type
    if model_type not in PARTS:
        raise UnsupportedModelError(f"pruning does not know {model_type!r} layers; use one of {', '.join(PARTS)}")
    return PARTS[model_type]


def _stack(model: nn.Module) -> nn.Module:
    """The module holding the layer list (DistilBERT: transformer; the others: encoder)."""
    base = model.base_model
    return base.transformer if hasattr(base, "transformer") else base.encoder


def encoder_layers(model: nn.Module) -> list[nn.Module]:
    return list(_stack(model).layer)


def keep_layers(model: nn.Module, keep: list[int]) -> None:
    """Keep only layers `keep` (current numbering); the others leave the model and the config's layer count.

    The config records each kept layer's original index (layer_origins). MPNet's relative position bias is computed
    once by the encoder and shared by every layer, so it is unaffected.
    """
    stack, kept = _stack(model), sorted(keep)
    if not kept:
        raise ValueError("an encoder keeps at least one layer")
    origins = layer_origins(model)
    stack.layer = nn.ModuleList([stack.layer[i] for i in kept])
    model.config.edgec_layers = [origins[i] for i in kept]  # distillation pairs the kept layers with the teacher's
    setattr(model.config, "n_layers" if model.config.model_type == "distilbert" else "num_hidden_layers", len(kept))
    if hasattr(stack, "n_layers"):  # DistilBERT's Transformer keeps its own count
        stack.n_layers = len(kept)


def apply_plan(model: nn.Module, plan: Plan) -> None:
    """Remove every unit the plan drops: heads and neurons of the layers that stay, then the layers that go."""
    for i, (heads, neurons) in enumerate(zip(plan.heads, plan.neurons)):
        if plan.layers[i] and not heads.all():
            keep_heads(model, i, np.flatnonzero(heads).tolist())
        if plan.layers[i] and not neurons.all():
            keep_neurons(model, i, np.flatnonzero(neurons).tolist())
    if not plan.layers.all():
        keep_layers(model, np.flatnonzero(plan.layers).tolist())


def get(module: nn.Module, path: str):
    for name in path.split("."):
        module = getattr(module, name)
    return module


def _set(module: nn.Module, path: str, value: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(get(module, parent) if parent else module, name, value)


def hidden_size(model: nn.Module) -> int:
    return getattr(model.config, "hidden_size", None) or model.config.dim  # DistilBERT calls it dim


def head_dim(model: nn.Module) -> int:
    """Channels per attention head (kept in the config once hidden-size pruning decouples it from the width)."""
    stored = getattr(model.config, "edgec_head_dim", None)
    return stored or hidden_size(model) // (getattr(model.config, "num_attention_heads", None) or model.config.n_heads)


def head_counts(model: nn.Module) -> list[int]:
    """Heads per layer as the model stands (0 where the attention became a constant)."""
    parts = parts_for(model)
    return [0 if isinstance(get(layer, parts.attention), ConstantAttention) else getattr(get(layer, parts.attention), parts.heads_attr)
            for layer in encoder_layers(model)]


def ffn_widths(model: nn.Module) -> list[int]:
    """FFN neurons per layer as the model stands."""
    parts = parts_for(model)
    return [0 if isinstance(get(layer, parts.ffn), ConstantFFN) else get(layer, parts.ffn_out).in_features
            for layer in encoder_layers(model)]


def layer_origins(model: nn.Module) -> list[int]:
    """The original index of each layer the model has now (removed layers leave gaps)."""
    origins = getattr(model.config, "edgec_layers", None)
    return list(origins) if origins is not None else list(range(len(encoder_layers(model))))


def hidden_channels(model: nn.Module) -> list[int] | None:
    """The original hidden channels the model kept, in order; None when it has them all."""
    channels = getattr(model.config, "edgec_channels", None)
    return list(channels) if channels is not None else None


def _slice_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping `index` along the weight's dim (0: outputs, 1: inputs)."""
    weight = linear.weight.detach().index_select(dim, index).clone()
    keep_bias = linear.bias is not None
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=keep_bias, dtype=weight.dtype)
    new.weight.data.copy_(weight)
    if keep_bias:
        new.bias.data.copy_(linear.bias.detach() if dim == 1 else linear.bias.detach()[index])
    return new


def keep_heads(model: nn.Module, layer_index: int, keep: list[int]) -> None:
    """Keep only heads `keep` (current numbering) of one layer; none kept -> a ConstantAttention."""
    parts, layer, size = parts_for(model), encoder_layers(model)[layer_index], head_dim(model)
    if not keep:
        bias = get(layer, parts.attn_out).bias
        _set(layer, parts.attention, ConstantAttention(bias if bias is not None else torch.zeros(get(layer, parts.attn_out).out_features)))
        if parts.attention.endswith(".self"):  # BERT family: the output projection sits outside the attention module
            _set(layer, parts.attn_out, nn.Identity())
        return
    index = torch.tensor([h * size + i for h in sorted(keep) for i in range(size)])
    for path in (parts.query, parts.key, parts.value):
        _set(layer, path, _slice_linear(get(layer, path), index, 0))
    _set(layer, parts.attn_out, _slice_linear(get(layer, parts.attn_out), index, 1))
    attention = get(layer, parts.attention)
    if model.config.model_type == "mpnet":
        _select_position_bias_heads(attention, sorted(keep))
    setattr(attention, parts.heads_attr, len(keep))
    setattr(attention, parts.width_attr, len(keep) * size)


def _select_position_bias_heads(attention: nn.Module, keep: list[int]) -> None:
    """MPNet computes one relative position bias for all heads and passes it to every layer: slice it here."""
    previous = getattr(attention, "kept_bias_heads", None)
    index = torch.tensor(keep) if previous is None else previous[torch.tensor(keep)]
    attention.register_buffer("kept_bias_heads", index, persistent=False)
    if previous is None:
        attention.register_forward_pre_hook(_slice_position_bias)


def _slice_position_bias(module: nn.Module, args: tuple) -> tuple:
    # MPNetAttention calls attn(hidden_states, attention_mask, head_mask, position_bias, ...) positionally.
    if len(args) > 3 and args[3] is not None:
        return (*args[:3], args[3].index_select(1, module.kept_bias_heads), *args[4:])
    return args


def keep_neurons(model: nn.Module, layer_index: int, keep: list[int]) -> None:
    """Keep only FFN neurons `keep` of one layer; none kept -> a ConstantFFN."""
    parts, layer = parts_for(model), encoder_layers(model)[layer_index]
    if not keep:
        _set(layer, parts.ffn, ConstantFFN(get(layer, parts.ffn_out).bias))
        if parts.ffn == "intermediate":  # BERT family: FFN out Linear lives in layer.output with the LayerNorm
            _set(layer, parts.ffn_out, nn.Identity())
        return
    index = torch.tensor(sorted(keep))
    _set(layer, parts.ffn_in, _slice_linear(get(layer, parts.ffn_in), index, 0))
    _set(layer, parts.ffn_out, _slice_linear(get(layer, parts.ffn_out), index, 1))


@torch.no_grad()
def scale_units(model: nn.Module, layer_index: int, head_scales: torch.Tensor | None, neuron_scales: torch.Tensor | None) -> None:
    """Fold per-unit scales (from the least-squares fit) into the output projections' input columns."""
    parts, layer = parts_for(model), encoder_layers(model)[layer_index]
    if head_scales is not None and len(head_scales):
        out = get(layer, parts.attn_out)
        out.weight.mul_(head_scales.repeat_interleave(head_dim(model)).to(out.weight.dtype))
    if neuron_scales is not None and len(neuron_scales):
        out = get(layer, parts.ffn_out)
        out.weight.mul_(neuron_scales.to(out.weight.dtype))


def dead_units(model: nn.Module) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """Heads and neurons whose output-projection columns are exactly zero: they contribute nothing.

    This is how a pruned model saved in Hugging Face's fixed-width layout marks padding, so loading it
    back can remove the padding physically.
    """
    parts, size = parts_for(model), head_dim(model)
    heads, neurons = {}, {}
    for i, (layer, count, width) in enumerate(zip(encoder_layers(model), head_counts(model), ffn_widths(model))):
        if count:
            blocks = get(layer, parts.attn_out).weight.reshape(-1, count, size)  # (hidden, heads, head_dim)
            dead = (blocks == 0).all(dim=2).all(dim=0).nonzero().flatten().tolist()
            if dead:
                heads[i] = dead
        if width:
            dead = (get(layer, parts.ffn_out).weight == 0).all(dim=0).nonzero().flatten().tolist()
            if dead:
                neurons[i] = dead
    return heads, neurons


def remove_dead_units(model: nn.Module) -> bool:
    """Physically remove zero-contribution heads and neurons; True if anything was removed."""
    if model.config.model_type not in PARTS:
        return False
    heads, neurons = dead_units(model)
    counts, widths = head_counts(model), ffn_widths(model)
    for i, dead in heads.items():
        keep_heads(model, i, [h for h in range(counts[i]) if h not in set(dead)])
    for i, dead in neurons.items():
        keep_neurons(model, i, [n for n in range(widths[i]) if n not in set(dead)])
    return bool(heads or neurons)


def standard_layout(model: nn.Module, summary: dict | None = None) -> nn.Module:
    """The pruned model as a stock transformers class can load it, computing exactly the same function.

    transformers expresses removed heads (config.pruned_heads) but not a layer without heads, MPNet's
    shared position bias with fewer heads, or FFN widths that differ per layer. So: heads go through
    pruned_heads (at least one kept per layer; all of them for MPNet), every FFN is as wide as the widest
    one, and the padding units have all-zero weights. `remove_dead_units` (run by edgec when loading)
    takes the padding out again.
    """
    parts, size, config = parts_for(model), head_dim(model), copy.deepcopy(model.config)
    counts, widths = head_counts(model), ffn_widths(model)
    capacity = hidden_size(model) // size  # heads transformers derives from the width (fewer after hidden pruning)
    if max(counts) > capacity:
        raise UnsupportedModelError(f"a layer keeps {max(counts)} heads, more than the {capacity} that a hidden "
                                    f"size of {hidden_size(model)} holds in transformers' layout; prune heads to that")
    columns = _bias_columns(model, parts, counts, capacity) if config.model_type == "mpnet" else None
    slots = [capacity if columns is not None else max(c, 1) for c in counts]
    setattr(config, "n_heads" if config.model_type == "distilbert" else "num_attention_heads", capacity)
    config.pruned_heads = {i: list(range(n, capacity)) for i, n in enumerate(slots) if n < capacity}
    setattr(config, "hidden_dim" if config.model_type == "distilbert" else "intermediate_size", max(max(widths), 1))
    if summary is not None:
        config.edgec_pruning = summary
    padded = type(model)(config)
    own = model.state_dict()
    padded.load_state_dict({k: v for k, v in own.items() if k in padded.state_dict() and padded.state_dict()[k].shape == v.shape}, strict=False)
    with torch.no_grad():
        if columns is not None:  # the shared position bias keeps the columns of the heads that remain anywhere
            bias = padded.base_model.encoder.relative_attention_bias.weight
            bias.copy_(model.base_model.encoder.relative_attention_bias.weight[:, columns])
        for i, (source, target) in enumerate(zip(encoder_layers(model), encoder_layers(padded))):
            _copy_heads(source, target, parts, counts[i], size, columns)
            _copy_neurons(source, target, parts, widths[i])
    return padded.eval()


def _bias_heads(source: nn.Module, parts: Parts, count: int) -> list[int]:
    """MPNet: the position-bias columns (original head indices) a layer's kept heads read."""
    attention = get(source, parts.attention)
    return attention.kept_bias_heads.tolist() if count and hasattr(attention, "kept_bias_heads") else list(range(count))


def bias_columns(model: nn.Module) -> list[np.ndarray]:
    """MPNet: per layer, the position-bias column (original head index) each of its heads reads."""
    parts = parts_for(model)
    layers = zip(encoder_layers(model), head_counts(model))
    return [np.asarray(_bias_heads(layer, parts, count), dtype=int) for layer, count in layers]


def _bias_columns(model: nn.Module, parts: Parts, counts: list[int], capacity: int) -> list[int]:
    """MPNet: the position-bias columns of the saved layout, one per head slot: every column a kept head reads
    (all layers share the bias), padded with unused ones up to `capacity`, in ascending order."""
    used = sorted({h for layer, c in zip(encoder_layers(model), counts) for h in _bias_heads(layer, parts, c)})
    if len(used) > capacity:
        raise UnsupportedModelError(
            f"MPNet's layers keep heads reading {len(used)} distinct position-bias columns, more than the {capacity} "
            f"heads a hidden size of {hidden_size(model)} holds in transformers' layout; prune heads to fewer columns")
    spare = [h for h in range(model.base_model.encoder.relative_attention_bias.embedding_dim) if h not in used]
    return sorted(used + spare[: capacity - len(used)])


def _copy_heads(source: nn.Module, target: nn.Module, parts: Parts, count: int, size: int,
                columns: list[int] | None) -> None:
    """Kept heads into their slots (MPNet: the slot of their position-bias column); zeros elsewhere."""
    slots = list(range(count)) if columns is None else [columns.index(h) for h in _bias_heads(source, parts, count)]
    rows = torch.tensor([s * size + j for s in slots for j in range(size)], dtype=torch.long)
    for path in (parts.query, parts.key, parts.value):
        linear = get(target, path)
        linear.weight.zero_(), linear.bias.zero_()
        if count:
            linear.weight[rows] = get(source, path).weight
            linear.bias[rows] = get(source, path).bias
    out = get(target, parts.attn_out)
    out.weight.zero_()
    if count:
        out.weight[:, rows] = get(source, parts.attn_out).weight
        out.bias.copy_(get(source, parts.attn_out).bias)
    else:
        out.bias.copy_(get(source, parts.attention).bias)


def _copy_neurons(source: nn.Module, target: nn.Module, parts: Parts, width: int) -> None:
    first, second = get(target, parts.ffn_in), get(target, parts.ffn_out)
    first.weight.zero_(), first.bias.zero_(), second.weight.zero_()
    if width:
        first.weight[:width] = get(source, parts.ffn_in).weight
        first.bias[:width] = get(source, parts.ffn_in).bias
        second.weight[:, :width] = get(source, parts.ffn_out).weight
        second.bias.copy_(get(source, parts.ffn_out).bias)
    else:
        second.bias.copy_(get(source, parts.ffn).bias)
