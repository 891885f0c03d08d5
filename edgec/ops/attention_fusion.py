"""Fuse attention that adds a position bias (MPNet's relative position bias) into ORT's MultiHeadAttention.

ONNX Runtime's transformers optimizer refuses this case ("MultiHeadAttention does not support
relative_position_bias"), so MPNet's attention core stays as unfused fp32 MatMul / Div / Add / Softmax /
MatMul / Transpose ops. The com.microsoft MultiHeadAttention contrib op takes the bias directly:

    MultiHeadAttention(query, key, value, bias, key_padding_mask, attention_bias)   (ORT 1.32 input order)
    query/key/value: (batch, seq, heads·head_dim), the Q/K/V projections before their bias;
    bias: (3·heads·head_dim,) the three projection biases; key_padding_mask: (batch, seq) int32, 1 = real token;
    attention_bias: (batch or 1, heads, seq, seq), added to Q·Kᵀ·scale before the softmax.

Q, K and V stay separate weight MatMuls, so static int8 quantizes them as it does BERT's.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgec.ops.graph import (
    PADDING_MASK,
    Lookups,
    add_padding_mask,
    attention_cores,
    attribute,
    finish_fusion,
    sum_terms,
)


def fuse_biased_attention(model: onnx.ModelProto) -> int:
    """Replace every `Softmax(Q·Kᵀ/c + position_bias + padding_mask)·V` core with one MultiHeadAttention.

    Matches the layout optimum's exporter writes for MPNet (and any encoder whose attention adds a bias
    that does not depend on the padding mask): per head-split projections `Transpose(Reshape(x·W + b))`,
    K transposed to (batch, heads, head_dim, seq), the padding mask as `(1 - mask)·min_float`. The position
    bias stays as the graph computes it, once per run, and is fed to every layer unexpanded over the batch:
    (1, heads, seq, seq), or its per-layer Gather of kept heads in a pruned model. Returns the count fused.
    """
    fused = attention_cores(model, _match)
    if not fused:
        return 0
    add_padding_mask(model, fused[0]["mask_input"])
    for index, match in enumerate(fused):
        _replace(model, match, index)
    finish_fusion(model)
    return len(fused)


def _match(graph: Lookups, softmax: onnx.NodeProto) -> dict | None:
    """The parts of one attention core around `softmax`, or None where the pattern differs anywhere."""
    if attribute(softmax, "axis", -1) not in (-1, 3):
        return None
    terms = sum_terms(graph, softmax.input[0])
    scores = [(t, s) for t in terms if (s := _scaled_product(graph, t)) is not None]
    masks = [(t, m) for t in terms if (m := _padding_mask(graph, t)) is not None]
    if len(scores) != 1 or len(masks) != 1 or len(terms) > 3:
        return None
    (score_term, (product, scale)), (mask_term, (mask_input, filter_value)) = scores[0], masks[0]
    biases = [t for t in terms if t not in (score_term, mask_term)]
    context = graph.only_reader(softmax.output[0], "MatMul")
    if context is None or context.input[0] != softmax.output[0]:
        return None
    merge = graph.only_reader(context.output[0], "Transpose")
    if merge is None or list(attribute(merge, "perm", [])) != [0, 2, 1, 3]:
        return None
    # (batch, seq, heads, head_dim) -> (batch, seq, hidden); a raw export also reads the shape it reshapes to
    reshape = graph.only_reader(merge.output[0], "Reshape", besides=("Shape",))
    if reshape is None:
        return None
    query, key, value = (
        _head_split(graph, name, perm)
        for name, perm in (
            (product.input[0], [0, 2, 1, 3]),
            (product.input[1], [0, 2, 3, 1]),
            (context.input[1], [0, 2, 1, 3]),
        )
    )
    if query is None or key is None or value is None or len({query["heads"], key["heads"], value["heads"]}) != 1:
        return None
    if len({p["bias"] is None for p in (query, key, value)}) != 1:  # the op takes all three biases or none
        return None
    bias = _unexpanded(graph, biases[0]) if biases else ("", None)
    if bias is None:  # a bias of another shape or making: MultiHeadAttention may not take it as it is
        return None
    return {
        "query": query,
        "key": key,
        "value": value,
        "scale": scale,
        "bias": bias[0],
        "repoint": bias[1],
        "mask_input": mask_input,
        "filter_value": filter_value,
        "output": reshape.output[0],
        "reshape": reshape,
        "name": softmax.name,
    }


def _scaled_product(graph: Lookups, name: str) -> tuple[onnx.NodeProto, float] | None:
    """(the Q·Kᵀ MatMul, its scale) for `MatMul(q, k)`, `Div(MatMul, c)` or `Mul(MatMul, c)`; both MatMul inputs activations."""
    scale, node = 1.0, graph.made.get(name)
    if node is not None and node.op_type in ("Div", "Mul"):
        constant = graph.value(node.input[1])
        if constant is None or constant.size != 1 or graph.op(node.input[0], "MatMul") is None:
            return None
        scale = 1.0 / float(constant.reshape(-1)[0]) if node.op_type == "Div" else float(constant.reshape(-1)[0])
        node = graph.made[node.input[0]]
    if node is None or node.op_type != "MatMul" or any(i in graph.constants for i in node.input):
        return None
    return node, scale


def _padding_mask(graph: Lookups, name: str) -> tuple[str, float] | None:
    """(graph input, fill value) for the extended padding mask `(1 - float(mask[:, None, None, :])) · c`."""
    mul = graph.op(name, "Mul")
    if mul is None:
        return None
    for flipped, constant in ((mul.input[0], mul.input[1]), (mul.input[1], mul.input[0])):
        fill, sub = graph.value(constant), graph.op(flipped, "Sub")
        one = graph.value(sub.input[0]) if sub is not None else None
        if fill is None or fill.size != 1 or one is None or one.size != 1 or float(one.reshape(-1)[0]) != 1.0:
            continue
        source = sub.input[1]
        while (node := graph.made.get(source)) is not None and node.op_type in ("Cast", "Unsqueeze"):
            source = node.input[0]
        if source in graph.inputs:
            return source, float(fill.reshape(-1)[0])
    return None


def _head_split(graph: Lookups, name: str, perm: list[int]) -> dict | None:
    """For `Transpose(Reshape(x·W [+ b]), perm)`: the projection without its bias, the bias, and the head count."""
    transpose = graph.op(name, "Transpose")
    if transpose is None or list(attribute(transpose, "perm", [])) != perm:
        return None
    reshape = graph.op(transpose.input[0], "Reshape")
    heads = graph.concat_item(reshape.input[1], 2) if reshape is not None else None
    if heads is None or heads <= 0:
        return None
    projection, bias = reshape.input[0], None
    add = graph.op(projection, "Add")
    if add is not None:
        constant = next((i for i in add.input if i in graph.constants), None)
        other = next((i for i in add.input if i != constant), None)
        if constant is not None and graph.op(other, "MatMul") is not None and graph.value(constant).ndim == 1:
            projection, bias = other, graph.value(constant)
    return {"input": projection, "bias": bias, "heads": heads}


def _unexpanded(graph: Lookups, name: str) -> tuple[str, tuple[onnx.NodeProto, str] | None] | None:
    """The position bias without its broadcast over the batch, for `Expand(Unsqueeze(bias, 0), ...)`: the
    (1, heads, seq, seq) tensor the op reads, and None; or, for a pruned layer's `Gather(that, kept_heads, axis=1)`,
    the Gather's output and (the Gather, the unexpanded tensor it is to read instead). None for a bias made any
    other way (its shape is not known to suit the op).

    The Gather is re-pointed in `_replace`, not here: layers that keep the same heads share one Gather (the exporter
    writes it once; MPNet's hidden pruning keeps the same bias columns in every layer), and each layer's match must
    still find the Expand behind it."""
    gather = graph.op(name, "Gather")
    target = gather.input[0] if gather is not None and attribute(gather, "axis", 0) == 1 else name
    expand = graph.op(target, "Expand")
    unsqueeze = graph.op(expand.input[0], "Unsqueeze") if expand is not None else None
    if unsqueeze is None:
        return None
    axes = graph.value(unsqueeze.input[1]) if len(unsqueeze.input) > 1 else np.array(attribute(unsqueeze, "axes", []))
    if axes is None or [int(a) for a in axes.reshape(-1)] != [0]:
        return None
    if gather is None:
        return expand.input[0], None
    return name, (gather, expand.input[0])


def _replace(model: onnx.ModelProto, match: dict, index: int) -> None:
    """Insert the MultiHeadAttention node in place of the Softmax; the old core becomes dead and is removed."""
    parts = [match[k] for k in ("query", "key", "value")]
    bias_name = ""
    if parts[0]["bias"] is not None:
        bias_name = f"edgec_attention_{index}_qkv_bias"
        bias = np.concatenate([p["bias"] for p in parts]).astype(np.float32)  # (3 · heads · head_dim,)
        model.graph.initializer.append(numpy_helper.from_array(bias, bias_name))
    node = helper.make_node(
        "MultiHeadAttention",
        [*(p["input"] for p in parts), bias_name, PADDING_MASK, match["bias"]],
        [match["output"]],
        name=f"edgec_attention_{index}",
        domain="com.microsoft",
        num_heads=match["query"]["heads"],
        scale=match["scale"],
        mask_filter_value=match["filter_value"],
    )
    if match["repoint"] is not None:  # the Gather of kept heads now reads the bias before its Expand
        gather, unexpanded = match["repoint"]
        gather.input[0] = unexpanded
    reshape = match["reshape"]
    reshape.output[0] = f"{reshape.output[0]}_edgec_unfused"  # now read by nobody: removed with the rest of the core
    position = next(i for i, n in enumerate(model.graph.node) if n.name == match["name"])
    model.graph.node.insert(position, node)
