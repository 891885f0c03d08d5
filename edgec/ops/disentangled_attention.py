"""Fuse DeBERTa-v2/v3's disentangled attention into ORT's MultiHeadAttention, its position terms as attention_bias.

DeBERTa adds two position terms to each head's scores before the softmax (He et al. 2021): content-to-position
c2p[i, j] = q_i · k_pos[δ(i, j)] and position-to-content p2c[i, j] = k_j · q_pos[δ'(j, i)], where k_pos and q_pos
are the layer's key and query projections of the relative position table (2·span rows) and δ, δ' index the table by
the bucketed distance between tokens. The export computes both for every one of the 2·span rows, with the tables
tiled over the batch and the index expanded over batch and heads, and leaves about 75 nodes of shape arithmetic per
layer around them: on DeBERTa-v3-base at 128 tokens, half of int8's kernel time (benchmarks/new_architectures.py).

Per layer, this rewrite feeds MultiHeadAttention the biased Q/K/V projections (the int8 path keeps them as
quantizable MatMuls), the padding mask, and attention_bias = c2p + p2c computed as:

    window = the table rows the sequence's distances reach, [min δ, max δ] (2·seq - 1 of the 2·span rows at most;
             the bucketed distances are monotonic, so the reached rows are contiguous)
    c2p    = GatherElements(Q_heads · (k_posᵀ · scale)[window], δ(i, j) - min δ, axis=-1)
    p2c    = the same over K_heads and q_pos with δ'(j, i) - min δ', transposed to (query, key)

The scaled, transposed tables are computed from initializers alone (ONNX Runtime folds them when a session loads;
static int8 folds them before quantizing). The indices depend only on the sequence length and are made once per graph,
expanded over batch and heads once per head count, for all layers that read the same distances. (A Gather of single
elements from the scores flattened per head, with no expanded index, was measured 6x slower than GatherElements in
ONNX Runtime 1.32: 19 ms against 3 ms per run of DeBERTa-v3-base fp32 at 128 tokens.)

One difference from the export, where nothing reads it: a padded query row. DeBERTa masks padded rows as well as
padded columns (its mask is mask[i]·mask[j]), which makes a padded token's attention uniform over every token;
MultiHeadAttention's key padding mask masks the columns only. Real tokens attend only to real tokens either way, so
every real token's state, the pooled embedding and the logits are unchanged; a padded token's state in
last_hidden_state differs, as pooling and sentence-transformers ignore it.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgec.ops.constant_folding import input_independent
from edgec.ops.graph import (
    PADDING_MASK,
    Lookups,
    add_padding_mask,
    attention_cores,
    attribute,
    finish_fusion,
    sum_terms,
)

# The ops between the padding mask input and the (batch, 1, seq, seq) boolean DeBERTa builds from it.
_MASK_OPS = ("Not", "Cast", "Mul", "Unsqueeze", "Squeeze")
# The ops between a distance tensor (a Clip of the bucketed relative positions) and the GatherElements that reads it.
_INDEX_OPS = ("Expand", "Squeeze", "Unsqueeze", "Reshape")
# The export reads the shape of most tensors; a match follows the data, not those Shape readers.
_SHAPE_OPS = ("Shape",)
# Constants up to this many values are told apart by value in a signature, larger ones by name.
_BY_VALUE = 64


def fuse_disentangled_attention(model: onnx.ModelProto) -> int:
    """Replace every DeBERTa attention core (Q·Kᵀ/scale + c2p + p2c, masked, Softmax, ·V) with MultiHeadAttention.

    Matches the layout optimum's exporter writes for DebertaV2 (transformers 4.57): heads split as
    `Reshape(Transpose(Reshape(x·W + b, [0, 0, heads, -1]), [0, 2, 1, 3]), [-1, seq, head_dim])`, the scale
    `Sqrt(head_dim · factor)` with factor 1 + the number of position terms, the position tables tiled over the batch.
    Cores that differ anywhere stay as they are. Returns the count fused.
    """
    constant, signatures = input_independent(model), dict[str, str]()
    fused = attention_cores(model, lambda graph, softmax: _match(graph, softmax, constant, signatures))
    if not fused:
        return 0
    add_padding_mask(model, fused[0]["mask_input"])
    shared = _Shared()
    for index, match in enumerate(fused):
        _replace(model, match, index, shared)
    finish_fusion(model)
    return len(fused)


def _match(graph: Lookups, softmax: onnx.NodeProto, constant: set[str], signatures: dict[str, str]) -> dict | None:
    """The parts of one DeBERTa attention core around `softmax`, or None where the pattern differs anywhere."""
    if attribute(softmax, "axis", -1) not in (-1, 3):
        return None
    where = graph.op(softmax.input[0], "Where")
    if where is None:
        return None
    fill, mask_input = graph.value(where.input[1]), _mask_input(graph, where.input[0])
    per_head = graph.op(where.input[2], "Reshape")  # (batch·heads, seq, seq) -> (batch, heads, seq, seq)
    if fill is None or fill.size != 1 or mask_input is None or per_head is None:
        return None
    terms = [t for t in sum_terms(graph, per_head.input[0]) if not _is_zero(graph, t)]
    products = [(t, p) for t in terms if (p := _scaled_product(graph, t)) is not None]
    if len(products) != 1:
        return None
    product_term, (query_heads, key_heads, factor) = products[0]
    query, key = _heads(graph, query_heads), _heads(graph, key_heads)
    found = [_position_term(graph, t, query_heads, key_heads, constant, signatures) for t in terms if t != product_term]
    positions = [p for p in found if p is not None and p["factor"] == factor]
    if query is None or key is None or len(positions) != len(found):
        return None
    if len({p["kind"] for p in positions}) != len(positions):  # c2p and p2c at most once each
        return None
    tail = _context(graph, softmax)
    value = _heads(graph, tail["value_heads"]) if tail is not None else None
    if tail is None or value is None or len({query["heads"], key["heads"], value["heads"]}) != 1:
        return None
    head_dim = _head_dim(graph, query)
    if head_dim is None:
        return None
    return {
        "query": query,
        "key": key,
        "value": value,
        "positions": positions,
        "scale": float(1.0 / np.sqrt(head_dim * factor)),
        "mask_input": mask_input,
        "filter_value": float(fill.reshape(-1)[0]),
        "output": tail["output"],
    }


def _mask_input(graph: Lookups, name: str) -> str | None:
    """The one graph input DeBERTa's (batch, 1, seq, seq) mask is made of, through the ops it is made with."""
    found, todo = set(), [name]
    while todo:
        current = todo.pop()
        if current in graph.inputs:
            found.add(current)
            continue
        node = graph.made.get(current)
        if node is None:
            if graph.value(current) is None:
                return None
            continue
        if node.op_type not in _MASK_OPS and node.op_type != "Constant":
            return None
        todo += [i for i in node.input if i]
    return found.pop() if len(found) == 1 else None


def _is_zero(graph: Lookups, name: str) -> bool:
    value = graph.value(name)
    return value is not None and value.size == 1 and float(value.reshape(-1)[0]) == 0.0


def _scale_factor(graph: Lookups, name: str) -> float | None:
    """c for the export's `Sqrt(Cast(head_dim) · c)` (head_dim read from a shape at run time)."""
    sqrt = graph.op(name, "Sqrt")
    if sqrt is None or (mul := graph.op(sqrt.input[0], "Mul")) is None:
        return None
    values = [v for i in mul.input if (v := graph.value(i)) is not None]
    return float(values[0].reshape(-1)[0]) if len(values) == 1 and values[0].size == 1 else None


def _scaled_product(graph: Lookups, name: str) -> tuple[str, str, float] | None:
    """(query heads, key heads, scale factor) for `MatMul(query_heads, Div(Transpose(key_heads, [0, 2, 1]), scale))`."""
    matmul = graph.op(name, "MatMul")
    if matmul is None or (divide := graph.op(matmul.input[1], "Div")) is None:
        return None
    transpose = graph.op(divide.input[0], "Transpose")
    if transpose is None or list(attribute(transpose, "perm", [])) != [0, 2, 1]:
        return None
    factor = _scale_factor(graph, divide.input[1])
    return None if factor is None else (matmul.input[0], transpose.input[0], factor)


def _heads(graph: Lookups, name: str) -> dict | None:
    """For `Reshape(Transpose(Reshape(projection, [0, 0, heads, -1]), [0, 2, 1, 3]), [-1, seq, head_dim])`: the
    projection (batch, seq, heads·head_dim), the (batch, heads, seq, head_dim) split, and the head count."""
    merged = graph.op(name, "Reshape")
    transpose = graph.op(merged.input[0], "Transpose") if merged is not None else None
    if transpose is None or list(attribute(transpose, "perm", [])) != [0, 2, 1, 3]:
        return None
    split = graph.op(transpose.input[0], "Reshape")
    heads = graph.concat_item(split.input[1], 2) if split is not None else None
    if split is None or heads is None or heads <= 0:
        return None
    return {"projection": split.input[0], "split": transpose.output[0], "heads": heads}


def _head_dim(graph: Lookups, query: dict) -> int | None:
    """The query projection's width over its heads, read from its weight (`x·W + b` or `x·W`)."""
    node = graph.made.get(query["projection"])
    if node is not None and node.op_type == "Add":
        node = next((graph.made[i] for i in node.input if graph.op(i, "MatMul") is not None), None)
    weight = graph.value(node.input[1]) if node is not None and node.op_type == "MatMul" else None
    if weight is None or weight.ndim != 2 or weight.shape[1] % query["heads"]:
        return None
    return weight.shape[1] // query["heads"]


def _position_term(
    graph: Lookups, name: str, query_heads: str, key_heads: str, constant: set[str], signatures: dict[str, str]
) -> dict | None:
    """One position term, `Div(GatherElements(MatMul(heads, Transpose(Tile(table))), index), scale)` for c2p (the
    query's heads) or the same with a Transpose after GatherElements for p2c (the key's heads): its kind, the
    (heads, 2·span, head_dim) table made from initializers, the distance tensor the index expands (and the digest
    of how it is computed), the scale factor."""
    divide = graph.op(name, "Div")
    factor = _scale_factor(graph, divide.input[1]) if divide is not None else None
    if divide is None or factor is None:
        return None
    gathered, kind = divide.input[0], "c2p"
    transpose = graph.op(gathered, "Transpose")
    if transpose is not None:
        if list(attribute(transpose, "perm", [])) != [0, 2, 1]:
            return None
        gathered, kind = transpose.input[0], "p2c"
    gather = graph.op(gathered, "GatherElements")
    matmul = graph.op(gather.input[0], "MatMul") if gather is not None else None
    if gather is None or matmul is None or attribute(gather, "axis", 0) not in (-1, 2):
        return None
    if matmul.input[0] != (query_heads if kind == "c2p" else key_heads):
        return None
    table, distances = _table(graph, matmul.input[1]), _distances(graph, gather.input[1])
    if table is None or table not in constant or distances is None:
        return None
    return {
        "kind": kind,
        "table": table,
        "distances": distances,
        "computed": _signature(graph, distances, signatures),
        "factor": factor,
    }


def _table(graph: Lookups, name: str) -> str | None:
    """The (heads, 2·span, head_dim) table behind `Transpose(Tile([Expand](table), repeats), [0, 2, 1])`."""
    transpose = graph.op(name, "Transpose")
    tile = graph.op(transpose.input[0], "Tile") if transpose is not None else None
    if transpose is None or tile is None or list(attribute(transpose, "perm", [])) != [0, 2, 1]:
        return None
    expand = graph.op(tile.input[0], "Expand")
    return expand.input[0] if expand is not None else tile.input[0]


def _distances(graph: Lookups, name: str) -> str | None:
    """The Clip of bucketed distances that a GatherElements index broadcasts over batch and heads."""
    while (node := graph.made.get(name)) is not None and node.op_type in _INDEX_OPS:
        name = node.input[0]
    return name if graph.op(name, "Clip") is not None else None


def _context(graph: Lookups, softmax: onnx.NodeProto) -> dict | None:
    """After the softmax: `Reshape` to (batch·heads, seq, seq), `MatMul` with the value heads, `Reshape` back to
    (batch, heads, seq, head_dim), `Transpose([0, 2, 1, 3])`, `Reshape` to (batch, seq, hidden): the value heads and
    the last Reshape's output, which MultiHeadAttention writes instead."""
    probabilities = graph.only_reader(softmax.output[0], "Reshape", besides=_SHAPE_OPS)
    matmul = (
        graph.only_reader(probabilities.output[0], "MatMul", besides=_SHAPE_OPS) if probabilities is not None else None
    )
    if probabilities is None or matmul is None or matmul.input[0] != probabilities.output[0]:
        return None
    per_head = graph.only_reader(matmul.output[0], "Reshape", besides=_SHAPE_OPS)
    merge = graph.only_reader(per_head.output[0], "Transpose", besides=_SHAPE_OPS) if per_head is not None else None
    if merge is None or list(attribute(merge, "perm", [])) != [0, 2, 1, 3]:
        return None
    output = graph.only_reader(merge.output[0], "Reshape", besides=_SHAPE_OPS)
    return None if output is None else {"value_heads": matmul.input[1], "output": output}


@dataclass
class _Shared:
    """What layers share: the gather index and window bounds per distance tensor and term kind, keyed by what computes
    the distances (each layer clips the same relative positions again); the index expanded over batch and heads, per
    head count as well; the names of new nodes."""

    indices: dict[tuple[str, str], tuple[str, str, str]] = field(default_factory=dict)
    expanded: dict[tuple[str, str, int], str] = field(default_factory=dict)
    names: itertools.count = field(default_factory=itertools.count)


def _replace(model: onnx.ModelProto, match: dict, index: int, shared: _Shared) -> None:
    """Insert the position terms and the MultiHeadAttention node before the core's last Reshape, which it replaces."""
    nodes: list[onnx.NodeProto] = []

    def node(op_type: str, inputs: list[str], **attributes) -> str:
        name = f"edgec_deberta_{next(shared.names)}"
        nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attributes))
        return name

    def constant(values, dtype) -> str:
        name = f"edgec_deberta_const_{next(shared.names)}"
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(values, dtype=dtype), name))
        return name

    terms = []
    for term in match["positions"]:
        heads = match["query" if term["kind"] == "c2p" else "key"]["split"]
        key = (term["computed"], term["kind"])
        if key not in shared.indices:
            tokens = match["query"]["projection"]
            shared.indices[key] = _window_index(node, constant, term["distances"], tokens)
        window_index, low, high = shared.indices[key]
        scaled = node("Mul", [node("Transpose", [term["table"]], perm=[0, 2, 1]), constant(match["scale"], np.float32)])
        window = node("Slice", [scaled, low, high, constant([2], np.int64)])
        scores = node("MatMul", [heads, window])  # (batch, heads, seq, width)
        wide = (*key, match["query"]["heads"])
        if wide not in shared.expanded:
            batch_heads = node("Slice", [node("Shape", [scores]), constant([0], np.int64), constant([2], np.int64)])
            square = node("Shape", [window_index])
            shared.expanded[wide] = node("Expand", [window_index, node("Concat", [batch_heads, square], axis=0)])
        gathered = node("GatherElements", [scores, shared.expanded[wide]], axis=3)
        terms.append(gathered if term["kind"] == "c2p" else node("Transpose", [gathered], perm=[0, 1, 3, 2]))
    bias = terms[0] if len(terms) == 1 else node("Add", terms) if terms else ""
    output = match["output"]
    nodes.append(
        helper.make_node(
            "MultiHeadAttention",
            [*(match[k]["projection"] for k in ("query", "key", "value")), "", PADDING_MASK, bias],
            [output.output[0]],
            name=f"edgec_deberta_attention_{index}",
            domain="com.microsoft",
            num_heads=match["query"]["heads"],
            scale=match["scale"],
            mask_filter_value=match["filter_value"],
        )
    )
    output.output[0] = f"{output.output[0]}_edgec_unfused"  # now read by nobody: removed with the rest of the core
    position = list(model.graph.node).index(output)
    for offset, new in enumerate(nodes):
        model.graph.node.insert(position + offset, new)


def _window_index(node, constant, distances: str, tokens: str) -> tuple[str, str, str]:
    """(the (seq, seq) distances less the window's first row, that row, one past the window's last row).

    Nothing here reads the rank of `distances`: the export's p2c distances come out of an If whose branches differ in
    rank (shape inference takes the one self-attention never runs), so a Shape of them, or a reduction keeping their
    dims, would disagree with the shapes ONNX Runtime plans buffers by. The sequence length is read from `tokens`,
    a (batch, seq, width) projection."""
    one = constant([1], np.int64)
    low = node("Reshape", [node("ReduceMin", [distances], keepdims=0), one])
    high = node("Add", [node("Reshape", [node("ReduceMax", [distances], keepdims=0), one]), one])
    length = node("Gather", [node("Shape", [tokens]), constant([1], np.int64)], axis=0)
    matrix = node("Reshape", [distances, node("Concat", [constant([-1], np.int64), length], axis=0)])  # (seq, seq)
    return node("Sub", [matrix, low]), low, high


def _signature(graph: Lookups, name: str, memo: dict[str, str]) -> str:
    """A digest of how `name` is computed (ops, attributes, small constants by value, large ones and graph inputs by
    name): two tensors with the same digest hold the same values, so what is computed from one serves for the other.

    Small constants go by value because the export writes each layer's own Constant nodes for the same numbers (the
    bucket count, the clip bounds). Large ones go by name: the walk reaches the weights through the Shape ops the
    distances are built from (DeBERTa-v3-base's 128100 x 768 word table among them), and reading them is not needed
    to tell that one initializer equals itself."""
    if name not in memo:
        source = _self_attention_branch(graph, name)
        value, made = graph.value(source), graph.made.get(source)
        if value is not None and value.size <= _BY_VALUE:
            text = f"value {value.dtype} {value.shape} {value.tobytes().hex()}"
        elif made is None or made.op_type == "Constant":
            text = f"named {source}"
        else:
            attributes = sorted((a.name, repr(helper.get_attribute_value(a))) for a in made.attribute)
            inputs = [_signature(graph, i, memo) if i else "" for i in made.input]
            text = f"{made.op_type} {made.domain} {list(made.output).index(source)} {attributes} {inputs}"
        memo[name] = hashlib.sha256(text.encode()).hexdigest()
    return memo[name]


def _self_attention_branch(graph: Lookups, name: str) -> str:
    """For DeBERTa's `If(Not(Equal(key length, query length)), rebuild distances, Identity(distances))` (transformers'
    build_rpos): the distances its else branch passes on, which self-attention always takes (its keys are its
    queries). Any other tensor as it is."""
    node = graph.op(name, "If")
    if node is None:
        return name
    condition = graph.op(node.input[0], "Not")
    otherwise = attribute(node, "else_branch")
    if condition is None or graph.op(condition.input[0], "Equal") is None or len(otherwise.node) != 1:
        return name
    passed = otherwise.node[0]
    return passed.input[0] if passed.op_type == "Identity" and passed.output[0] == otherwise.output[0].name else name
