"""Physical edits of Hugging Face encoders: where each layer's heads and FFN neurons live, and removing them.

Every supported architecture is a stack of layers: attention (Q, K, V, output projection) then an FFN
(in, activation, out), each added to the residual stream. Most are post-LayerNorm (the sum feeds a
LayerNorm); ModernBERT is pre-LayerNorm (the attention sum feeds the FFN's LayerNorm, the FFN sum is the
layer's output). A head is a block of `head_dim` rows of Q/K/V (ModernBERT: of each third of its fused
Wqkv) and the same columns of the output projection; an FFN neuron is a row of the FFN's input Linear
(a gated FFN: one row of each half of it, value and gate) and a column of its output Linear. A sub-layer
that loses all its units becomes its output bias (what the masked sub-layer computes), so the residual
stays and the graph has no zero-sized tensors. A removed layer leaves the encoder's layer list (its input
passes straight on).

Each unit kind has one removal function (keep_heads, keep_neurons, keep_layers) and `apply_plan` runs them
in an order where indices stay valid: units inside layers first, then the layers.
"""

from __future__ import annotations

import copy
import dataclasses
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
    """The LayerNorm whose input is x + attention(x): after the attention (post-LN) or before the FFN (pre-LN)."""
    ffn_in: str
    ffn_out: str
    ffn_norm: str
    """The LayerNorm whose input is x + ffn(x); "" where that sum is the layer's output (pre-LN)."""
    ffn: str
    """The module mapping the attention output to the FFN output (replaced when no neuron is left)."""
    heads_attr: str
    """Head count attribute of the attention module."""
    width_attr: str
    """heads x head_dim attribute of the attention module."""
    qkv_fused: bool = False
    """Q, K and V are one Linear (`query` = `key` = `value`) whose rows are [Q | K | V]."""
    ffn_gated: bool = False
    """The FFN input Linear's rows are [value | gate] (a GLU: act(value) * gate), one of each per neuron."""
    head_rows_extra: tuple[str, ...] = ()
    """Further Linears with a block of rows per head, where the layer has them (DeBERTa's position projections)."""


_BERT = Parts(
    "attention.self",
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "attention.output.LayerNorm",
    "intermediate.dense",
    "output.dense",
    "output.LayerNorm",
    "intermediate",
    "num_attention_heads",
    "all_head_size",
)
_MPNET = Parts(
    "attention.attn",
    "attention.attn.q",
    "attention.attn.k",
    "attention.attn.v",
    "attention.attn.o",
    "attention.LayerNorm",
    "intermediate.dense",
    "output.dense",
    "output.LayerNorm",
    "intermediate",
    "num_attention_heads",
    "all_head_size",
)
_DISTILBERT = Parts(
    "attention",
    "attention.q_lin",
    "attention.k_lin",
    "attention.v_lin",
    "attention.out_lin",
    "sa_layer_norm",
    "ffn.lin1",
    "ffn.lin2",
    "output_layer_norm",
    "ffn",
    "n_heads",
    "dim",
)
# DeBERTa-v2/v3: BERT's layout; without share_att_key the relative positions get their own per-head projections.
_DEBERTA_V2 = dataclasses.replace(
    _BERT,
    query="attention.self.query_proj",
    key="attention.self.key_proj",
    value="attention.self.value_proj",
    head_rows_extra=("attention.self.pos_key_proj", "attention.self.pos_query_proj"),
)
# ModernBERT: pre-LayerNorm, fused Wqkv, GLU FFN, no biases.
_MODERNBERT = Parts(
    "attn",
    "attn.Wqkv",
    "attn.Wqkv",
    "attn.Wqkv",
    "attn.Wo",
    "mlp_norm",
    "mlp.Wi",
    "mlp.Wo",
    "",
    "mlp",
    "num_heads",
    "all_head_size",
    qkv_fused=True,
    ffn_gated=True,
)
PARTS = {
    "bert": _BERT,
    "roberta": _BERT,
    "xlm-roberta": _BERT,
    "electra": _BERT,
    "mpnet": _MPNET,
    "distilbert": _DISTILBERT,
    "deberta-v2": _DEBERTA_V2,
    "modernbert": _MODERNBERT,
}
# transformers cannot express fewer heads for these (MPNet's shared position bias; no prune_heads in the others).
_FIXED_HEAD_SLOTS = ("mpnet", "modernbert", "deberta-v2")


class ConstantAttention(nn.Module):
    """An attention sub-layer with no heads left: its output is the output projection's bias."""

    def __init__(self, bias: torch.Tensor):
        super().__init__()
        self.bias = nn.Parameter(bias.detach().clone())

    def forward(self, hidden_states=None, *args, query=None, **kwargs):  # DistilBERT passes query=
        x = hidden_states if hidden_states is not None else query
        # (output, attention weights): DeBERTa unpacks both; the other layers read [0] and pass the rest on.
        return self.bias.expand(*x.shape[:-1], -1), None


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


def _stack(model: nn.Module) -> tuple[nn.Module, str]:
    """The module holding the layer list and the list's attribute (ModernBERT: the model's `layers`; DistilBERT:
    transformer.layer; the others: encoder.layer)."""
    base = model.base_model
    if hasattr(base, "layers"):  # ModernBERT: the model holds its layer list itself
        return base, "layers"
    return (base.transformer if hasattr(base, "transformer") else base.encoder), "layer"


def encoder_layers(model: nn.Module) -> list[nn.Module]:
    stack, name = _stack(model)
    return list(getattr(stack, name))


def keep_layers(model: nn.Module, keep: list[int]) -> None:
    """Keep only layers `keep` (current numbering); the others leave the model and the config's layer count.

    The config records each kept layer's original index (layer_origins). MPNet's relative position bias (and
    DeBERTa's relative embeddings) are computed once by the encoder and shared by every layer, so they are
    unaffected; a ModernBERT layer keeps its own local or global attention.
    """
    (stack, name), kept = _stack(model), sorted(keep)
    if not kept:
        raise ValueError("an encoder keeps at least one layer")
    origins = layer_origins(model)
    layers = getattr(stack, name)
    setattr(stack, name, nn.ModuleList([layers[i] for i in kept]))
    model.config.edgec_layers = [origins[i] for i in kept]  # distillation pairs the kept layers with the teacher's
    setattr(model.config, "n_layers" if model.config.model_type == "distilbert" else "num_hidden_layers", len(kept))
    if hasattr(stack, "n_layers"):  # DistilBERT's Transformer keeps its own count
        stack.n_layers = len(kept)
    if kept != list(range(len(layers))):
        model.edgec_layers_removed = True  # standard_layout cannot renumber ModernBERT layers


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
    """The submodule at a dotted path ("" is the module itself)."""
    for name in filter(None, path.split(".")):
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
    return [
        0
        if isinstance(get(layer, parts.attention), ConstantAttention)
        else getattr(get(layer, parts.attention), parts.heads_attr)
        for layer in encoder_layers(model)
    ]


def ffn_widths(model: nn.Module) -> list[int]:
    """FFN neurons per layer as the model stands."""
    parts = parts_for(model)
    return [
        0 if isinstance(get(layer, parts.ffn), ConstantFFN) else get(layer, parts.ffn_out).in_features
        for layer in encoder_layers(model)
    ]


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


def _head_rows(parts: Parts, count: int, size: int, keep: list[int]) -> torch.Tensor:
    """Rows of the Q/K/V Linear(s) that hold heads `keep` of `count`: one block per head (per third of a fused QKV)."""
    rows = [h * size + i for h in keep for i in range(size)]
    thirds = range(3) if parts.qkv_fused else range(1)
    return torch.tensor([third * count * size + r for third in thirds for r in rows], dtype=torch.long)


def head_row_paths(layer: nn.Module, parts: Parts) -> list[str]:
    """The Linears with a block of output rows per head that this layer has (Q/K/V or the fused QKV, extras)."""
    paths = dict.fromkeys((parts.query, parts.key, parts.value))  # one entry for a fused QKV
    return [*paths, *(p for p in parts.head_rows_extra if _has(layer, p))]


def _has(module: nn.Module, path: str) -> bool:
    try:
        get(module, path)
    except AttributeError:
        return False
    return True


def keep_heads(model: nn.Module, layer_index: int, keep: list[int]) -> None:
    """Keep only heads `keep` (current numbering) of one layer; none kept -> a ConstantAttention."""
    parts, layer, size = parts_for(model), encoder_layers(model)[layer_index], head_dim(model)
    if not keep:
        bias = get(layer, parts.attn_out).bias
        _set(
            layer,
            parts.attention,
            ConstantAttention(bias if bias is not None else torch.zeros(get(layer, parts.attn_out).out_features)),
        )
        if parts.attention.endswith(".self"):  # BERT family: the output projection sits outside the attention module
            _set(layer, parts.attn_out, nn.Identity())
        return
    attention = get(layer, parts.attention)
    rows = _head_rows(parts, getattr(attention, parts.heads_attr), size, sorted(keep))
    for path in head_row_paths(layer, parts):
        _set(layer, path, _slice_linear(get(layer, path), rows, 0))
    columns = rows[: len(keep) * size]  # the first (Q) block: head h's columns of the output projection
    _set(layer, parts.attn_out, _slice_linear(get(layer, parts.attn_out), columns, 1))
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


def _neuron_rows(parts: Parts, width: int, keep: list[int]) -> torch.Tensor:
    """Rows of the FFN input Linear that hold neurons `keep` of `width` (both halves of a gated FFN)."""
    halves = range(2) if parts.ffn_gated else range(1)
    return torch.tensor([half * width + n for half in halves for n in keep], dtype=torch.long)


def keep_neurons(model: nn.Module, layer_index: int, keep: list[int]) -> None:
    """Keep only FFN neurons `keep` of one layer; none kept -> a ConstantFFN."""
    parts, layer = parts_for(model), encoder_layers(model)[layer_index]
    out = get(layer, parts.ffn_out)
    if not keep:
        _set(layer, parts.ffn, ConstantFFN(out.bias if out.bias is not None else torch.zeros(out.out_features)))
        if parts.ffn == "intermediate":  # BERT family: FFN out Linear lives in layer.output with the LayerNorm
            _set(layer, parts.ffn_out, nn.Identity())
        return
    rows = _neuron_rows(parts, out.in_features, sorted(keep))
    _set(layer, parts.ffn_in, _slice_linear(get(layer, parts.ffn_in), rows, 0))
    _set(layer, parts.ffn_out, _slice_linear(out, torch.tensor(sorted(keep)), 1))


def output_bias(layer: nn.Module, path: str) -> nn.Parameter:
    """The bias a sub-layer adds (its output Linear's, or a constant sub-layer's), made as zeros where it has none.

    Least squares moves removed units' mean contribution into it, so a model without biases (ModernBERT)
    gets one on the projections it refits; standard_layout saves it.
    """
    module = get(layer, path)
    if module.bias is None:
        module.bias = nn.Parameter(torch.zeros(module.out_features, dtype=module.weight.dtype))
    return module.bias


def on_residual_sum(layer: nn.Module, norm_path: str, callback) -> torch.utils.hooks.RemovableHandle:
    """Call callback(sum) with a sub-layer's residual sum x + f(x): the input of the LayerNorm at `norm_path`,
    or the layer's output where the path is "" (pre-LN FFN)."""
    if norm_path:
        return get(layer, norm_path).register_forward_pre_hook(lambda module, args: callback(args[0]))
    return layer.register_forward_hook(
        lambda module, args, output: callback(output[0] if isinstance(output, tuple) else output)
    )


def ffn_matrices(model: nn.Module) -> int:
    """Weight rows/columns one FFN neuron owns: 2 (in row, out column), 3 with a gate row."""
    return 3 if parts_for(model).ffn_gated else 2


@torch.no_grad()
def scale_units(
    model: nn.Module, layer_index: int, head_scales: torch.Tensor | None, neuron_scales: torch.Tensor | None
) -> None:
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

    transformers expresses removed heads (config.pruned_heads) but not a layer without heads, fewer heads in
    MPNet (its shared position bias), ModernBERT or DeBERTa (no prune_heads), or FFN widths that differ per
    layer. So: heads go through pruned_heads (at least one kept per layer; all slots for those three), every
    FFN is as wide as the widest one, and the padding units have all-zero weights. `remove_dead_units`
    (run by edgec when loading) takes the padding out again. A model without biases (ModernBERT) that
    gained them from least squares is saved with its bias flags on.
    """
    parts, size, config = parts_for(model), head_dim(model), copy.deepcopy(model.config)
    if config.model_type == "modernbert" and getattr(model, "edgec_layers_removed", False):
        # A ModernBERT layer's local or global attention (and its first LayerNorm) follow its index in the config.
        raise UnsupportedModelError(
            "a ModernBERT with whole layers removed cannot be saved as a transformers folder (its layers "
            "alternate local and global attention by position); prune with --units heads,ffn, or build "
            "the artifact directly with `edgec build --prune`"
        )
    counts, widths = head_counts(model), ffn_widths(model)
    capacity = hidden_size(model) // size  # heads transformers derives from the width (fewer after hidden pruning)
    if max(counts) > capacity:
        raise UnsupportedModelError(
            f"a layer keeps {max(counts)} heads, more than the {capacity} that a hidden "
            f"size of {hidden_size(model)} holds in transformers' layout; prune heads to that"
        )
    columns = _bias_columns(model, parts, counts, capacity) if config.model_type == "mpnet" else None
    slots = [capacity if config.model_type in _FIXED_HEAD_SLOTS else max(c, 1) for c in counts]
    setattr(config, "n_heads" if config.model_type == "distilbert" else "num_attention_heads", capacity)
    config.pruned_heads = {i: list(range(n, capacity)) for i, n in enumerate(slots) if n < capacity}
    setattr(config, "hidden_dim" if config.model_type == "distilbert" else "intermediate_size", max(max(widths), 1))
    if config.model_type == "modernbert" and any(
        _sublayer_bias(layer, parts, kind) is not None for layer in encoder_layers(model) for kind in ("heads", "ffn")
    ):
        config.attention_bias = config.mlp_bias = True
    if summary is not None:
        config.edgec_pruning = summary
    padded = type(model)(config)
    own = model.state_dict()
    padded.load_state_dict(
        {k: v for k, v in own.items() if k in padded.state_dict() and padded.state_dict()[k].shape == v.shape},
        strict=False,
    )
    with torch.no_grad():
        if columns is not None:  # the shared position bias keeps the columns of the heads that remain anywhere
            bias = padded.base_model.encoder.relative_attention_bias.weight
            bias.copy_(model.base_model.encoder.relative_attention_bias.weight[:, columns])
        for i, (source, target) in enumerate(zip(encoder_layers(model), encoder_layers(padded))):
            _copy_heads(source, target, parts, counts[i], size, _head_slots(source, parts, counts[i], columns))
            _copy_neurons(source, target, parts, widths[i])
    return padded.eval()


def _sublayer_bias(layer: nn.Module, parts: Parts, kind: str) -> torch.Tensor | None:
    """What a sub-layer adds besides its units: its output Linear's bias, or a constant sub-layer's output."""
    whole, out = (parts.attention, parts.attn_out) if kind == "heads" else (parts.ffn, parts.ffn_out)
    module = get(layer, whole)
    return module.bias if isinstance(module, (ConstantAttention, ConstantFFN)) else get(layer, out).bias


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
            f"heads a hidden size of {hidden_size(model)} holds in transformers' layout; prune heads to fewer columns"
        )
    spare = [h for h in range(model.base_model.encoder.relative_attention_bias.embedding_dim) if h not in used]
    return sorted(used + spare[: capacity - len(used)])


def _head_slots(source: nn.Module, parts: Parts, count: int, columns: list[int] | None) -> list[int]:
    """Where a layer's kept heads go: for MPNet the slot of the position-bias column each reads, else the first slots."""
    return list(range(count)) if columns is None else [columns.index(h) for h in _bias_heads(source, parts, count)]


def _copy_rows(target: nn.Linear, source: nn.Linear | None, rows: torch.Tensor) -> None:
    """Zero the target Linear, then put the source's rows (outputs) at `rows`."""
    target.weight.zero_()
    if target.bias is not None:
        target.bias.zero_()
    if source is not None:
        target.weight[rows] = source.weight
        if target.bias is not None and source.bias is not None:
            target.bias[rows] = source.bias


def _copy_heads(source: nn.Module, target: nn.Module, parts: Parts, count: int, size: int, slots: list[int]) -> None:
    """Kept heads into their slots; zeros elsewhere."""
    full = getattr(get(target, parts.attention), parts.heads_attr)
    for path in head_row_paths(target, parts):
        _copy_rows(get(target, path), get(source, path) if count else None, _head_rows(parts, full, size, slots))
    out = get(target, parts.attn_out)
    out.weight.zero_()
    if count:
        out.weight[:, _head_rows(parts, full, size, slots)[: count * size]] = get(source, parts.attn_out).weight
    if out.bias is not None:
        bias = _sublayer_bias(source, parts, "heads")
        out.bias.copy_(bias if bias is not None else torch.zeros_like(out.bias))


def _copy_neurons(source: nn.Module, target: nn.Module, parts: Parts, width: int) -> None:
    first, second = get(target, parts.ffn_in), get(target, parts.ffn_out)
    rows = _neuron_rows(parts, second.in_features, list(range(width)))
    _copy_rows(first, get(source, parts.ffn_in) if width else None, rows)
    second.weight.zero_()
    if width:
        second.weight[:, :width] = get(source, parts.ffn_out).weight
    if second.bias is not None:
        bias = _sublayer_bias(source, parts, "ffn")
        second.bias.copy_(bias if bias is not None else torch.zeros_like(second.bias))
