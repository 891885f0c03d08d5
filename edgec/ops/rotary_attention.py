"""Fuse ModernBERT's attention (rotary position embeddings, a padding or sliding-window mask) into ORT's contrib ops.

ONNX Runtime's transformers optimizer has no fusion for it, so each layer's core stays some 60 small ops: the head
split (Reshape, Transpose, Split, Squeeze), rotate_half (Slice, Neg, Concat), the layer's own cos/sin tables (Range,
MatMul, Cos, Sin), the scale torch's SDPA export derives from the shape, Q·Kᵀ, the mask's Add, Softmax, ·V and the head
merge. Here each core becomes

    q, k, v = Split(qkv, 3, axis=-1)                     qkv: the fused Wqkv projection, (batch, seq, 3·heads·head_dim)
    q, k = RotaryEmbedding(q | k, 0, cos_cache, sin_cache)      rotate_half (interleaved=0), positions 0..seq-1
    out = MultiHeadAttention(q, k, v, attention_bias=mask)      (batch, seq, heads·head_dim), read by Wo

The mask stays as the graph computes it once per run: (batch, 1, seq, seq), the padding mask for global layers, padding
and the sliding window for local ones. The cos/sin caches are initializers, one pair per distinct set of inverse
frequencies (ModernBERT's global and local layers use rope theta 160000 and 10000), read from the exported graph.
Wqkv stays one weight MatMul, which static int8 quantizes.

Measured on ModernBERT-base (random weights, 128 tokens, ORT 1.32, 2 threads on a shared 2-core AVX512-VNNI CPU, the
profiles inflated by the other load alike): the attention core's kernel time fell from 91 to 58 ms in int8 and from
67 to 38 ms in fp32, the whole graph's by 7% in both; MultiHeadAttention itself is most of what is left (it still
computes the products and Softmax). Feeding it the export's own rotary ops instead of RotaryEmbedding (Q merged to
(batch, seq, hidden), K and V in (batch, heads, seq, head_dim)) was slower than not fusing at all.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgec.ops.graph import Lookups, attention_cores, attribute, finish_fusion

_PREFIX = "edgec_rotary"


def fuse_rotary_attention(model: onnx.ModelProto, max_positions: int) -> int:
    """Replace every rotary attention core (see the module docstring) with RotaryEmbedding and MultiHeadAttention.

    Matches the layout transformers' ModernBERT exports with optimum (SDPA or eager attention), with the positions
    0..seq-1 of a Range; `max_positions` rows of cos/sin are tabled, the model's own limit (the op reads past
    nothing: longer inputs fail). Returns the count fused; a graph with no such core is left unchanged.
    """
    fused = attention_cores(model, _match)
    caches: dict[bytes, tuple[str, str]] = {}
    for index, match in enumerate(fused):
        _replace(model, match, index, _caches(model, caches, match["rotary"], max_positions))
    if fused:
        finish_fusion(model)
    return len(fused)


def _match(graph: Lookups, softmax: onnx.NodeProto) -> dict | None:
    """The parts of one rotary attention core around `softmax`, or None where the pattern differs anywhere."""
    add = graph.op(softmax.input[0], "Add")
    if attribute(softmax, "axis", -1) not in (-1, 3) or add is None:
        return None
    found = [(i, p) for i, term in enumerate(add.input) if (p := _product(graph, term)) is not None]
    if len(found) != 1:
        return None
    (index, (query, key, factors)) = found[0]
    mask = add.input[1 - index]  # the other term: the padding mask, or padding and the sliding window
    context = graph.only_reader(softmax.output[0], "MatMul")
    if context is None or context.input[0] != softmax.output[0]:
        return None
    merge = graph.only_reader(context.output[0], "Transpose")
    if merge is None or list(attribute(merge, "perm", [])) != [0, 2, 1, 3]:
        return None
    # (batch, seq, heads, head_dim) -> (batch, seq, heads·head_dim); the export also reads the shape it reshapes to
    reshape = graph.only_reader(merge.output[0], "Reshape", besides=("Shape",))
    if reshape is None or not _from_inputs(graph, mask):
        return None
    rotated = [_rotation(graph, query), _rotation(graph, key)]
    if rotated[0] is None or rotated[1] is None or not np.array_equal(rotated[0]["table"], rotated[1]["table"]):
        return None
    split = _head_split(graph, [rotated[0]["input"], rotated[1]["input"], context.input[1]])
    if split is None or rotated[0]["table"].size - 2 != split["head_dim"] // 2:
        return None
    scale = math.prod(f if f is not None else (1.0 / split["head_dim"]) ** 0.25 for f in factors)
    return {**split, "rotary": rotated[0], "scale": scale, "mask": mask, "reshape": reshape, "name": softmax.name}


def _product(graph: Lookups, name: str) -> tuple[str, str, list[float | None]] | None:
    """(rotated Q, rotated K, scale factors) for the scores `(Q·f)·(Kᵀ·f)`, `(Q·Kᵀ)·c` or `(Q·Kᵀ)/c`.

    A factor of None is SDPA's `sqrt(1/sqrt(head_dim))`, which the export computes from Q's shape at run time."""
    factors: list[float | None] = []
    node = graph.made.get(name)
    if node is not None and node.op_type in ("Div", "Mul"):
        constant = graph.value(node.input[1])
        if constant is None or constant.size != 1:
            return None
        factors.append(1.0 / float(constant.item()) if node.op_type == "Div" else float(constant.item()))
        node = graph.made.get(node.input[0])
    if node is None or node.op_type != "MatMul":
        return None
    query, query_factor = _scaled(graph, node.input[0])
    transposed, key_factor = _scaled(graph, node.input[1])
    key = graph.op(transposed, "Transpose")
    if key is None or list(attribute(key, "perm", [])) != [0, 1, 3, 2] or query_factor is False or key_factor is False:
        return None
    return query, key.input[0], [*factors, *(f for f in (query_factor, key_factor) if f is not True)]


def _scaled(graph: Lookups, name: str) -> tuple[str, float | None | bool]:
    """(x, its factor) for `Mul(x, c)` or SDPA's `Mul(x, Sqrt(Div(1, Sqrt(Cast(Slice(Shape(q), -1))))))` (factor None);
    True for no Mul at all, False for a Mul of anything else."""
    mul = graph.op(name, "Mul")
    if mul is None:
        return name, True
    constant = graph.value(mul.input[1])
    if constant is not None:
        return mul.input[0], float(constant.item()) if constant.size == 1 else False
    sqrt = graph.op(_uncast(graph, mul.input[1]), "Sqrt")
    div = graph.op(_uncast(graph, sqrt.input[0]), "Div") if sqrt is not None else None
    one = graph.value(div.input[0]) if div is not None else None
    inner = graph.op(_uncast(graph, div.input[1]), "Sqrt") if div is not None else None
    dim = graph.op(_uncast(graph, inner.input[0]), "Slice") if inner is not None else None
    shape = graph.op(dim.input[0], "Shape") if dim is not None else None
    starts = graph.value(dim.input[1]) if dim is not None else None
    if shape is None or one is None or one.size != 1 or one.item() != 1.0 or starts is None or starts.tolist() != [-1]:
        return mul.input[0], False
    return mul.input[0], None


def _uncast(graph: Lookups, name: str) -> str:
    while (node := graph.op(name, "Cast")) is not None:
        name = node.input[0]
    return name


def _from_inputs(graph: Lookups, name: str) -> bool:
    """Whether `name` is computed from the graph's inputs and small constants only, never a weight (so never from the
    hidden states): a mask the export derives from attention_mask, the same for every layer of a kind."""
    seen, stack = set(), [name]
    while stack:
        current = stack.pop()
        if current in seen or current in graph.inputs:
            continue
        seen.add(current)
        if current in graph.constants:
            if int(np.prod(graph.constants[current].dims)) > 64:
                return False
            continue
        node = graph.made.get(current)
        if node is None:
            return False
        stack += [i for i in node.input if i]
    return True


def _rotation(graph: Lookups, name: str) -> dict | None:
    """For `x·cos + rotate_half(x)·sin` with cos and sin from the layer's rotary embedding: x and the (1, dim/2)
    inverse frequencies and the cos and sin scalings, as one `table` row [cos_scale, sin_scale, *inverse]."""
    add = graph.op(name, "Add")
    muls = [graph.op(i, "Mul") for i in add.input] if add is not None else []
    if len(muls) != 2 or muls[0] is None or muls[1] is None:
        return None
    for plain, turned in ((muls[0], muls[1]), (muls[1], muls[0])):
        for half, sin in ((turned.input[0], turned.input[1]), (turned.input[1], turned.input[0])):
            source = _rotate_half(graph, half)
            if source is None or source not in plain.input:
                continue
            cos = plain.input[1] if plain.input[0] == source else plain.input[0]
            tables = _table(graph, cos, "Cos"), _table(graph, sin, "Sin")
            if tables[0] is None or tables[1] is None or tables[0][0] != tables[1][0]:
                return None
            inverse = graph.value(tables[0][0])
            if inverse is None:
                return None
            row = np.concatenate([[tables[0][1], tables[1][1]], inverse.reshape(-1)]).astype(np.float32)
            return {"input": source, "table": row}
    return None


def _rotate_half(graph: Lookups, name: str) -> str | None:
    """x for `Concat(Neg(x[..., d/2:]), x[..., :d/2], axis=-1)`, transformers' rotate_half."""
    concat = graph.op(name, "Concat")
    if concat is None or len(concat.input) != 2 or attribute(concat, "axis") not in (-1, 3):
        return None
    neg = graph.op(concat.input[0], "Neg")
    upper = graph.op(neg.input[0], "Slice") if neg is not None else None
    lower = graph.op(concat.input[1], "Slice")
    if upper is None or lower is None or upper.input[0] != lower.input[0]:
        return None
    axes = [graph.value(s.input[3]) if len(s.input) > 3 else None for s in (upper, lower)]
    if any(a is None or a.tolist() not in ([-1], [3]) for a in axes):
        return None
    start, end = graph.value(lower.input[1]), graph.value(upper.input[2])
    if start is None or start.tolist() != [0] or end is None or end.tolist()[0] < 2**31 - 1:
        return None
    if _unsqueezed(graph, upper.input[1]) != _unsqueezed(graph, lower.input[2]):  # both d/2, the same tensor
        return None
    return lower.input[0]


def _unsqueezed(graph: Lookups, name: str) -> str:
    while (node := graph.op(name, "Unsqueeze")) is not None:
        name = node.input[0]
    return name


def _table(graph: Lookups, name: str, op_type: str) -> tuple[str, float] | None:
    """(the inverse frequencies, the scaling) for `Unsqueeze(Cos(Concat(t, t)) · s, 1)` (or Sin), where
    `t = Transpose(Expand(inverse) · positions)` and the positions are Range(0, seq, 1)."""
    unsqueeze = graph.op(_uncast(graph, name), "Unsqueeze")
    if unsqueeze is None or len(unsqueeze.input) < 2:
        return None
    axes = graph.value(unsqueeze.input[1])
    if axes is None or axes.tolist() != [1]:
        return None
    scaled, scale = _uncast(graph, unsqueeze.input[0]), 1.0
    mul = graph.op(scaled, "Mul")
    if mul is not None:
        constant = graph.value(mul.input[1])
        if constant is None or constant.size != 1:
            return None
        scaled, scale = _uncast(graph, mul.input[0]), float(constant.item())
    wave = graph.op(scaled, op_type)
    concat = graph.op(wave.input[0], "Concat") if wave is not None else None
    if concat is None or len(concat.input) != 2 or concat.input[0] != concat.input[1]:
        return None
    transpose = graph.op(concat.input[0], "Transpose")
    if transpose is None or list(attribute(transpose, "perm", [])) != [0, 2, 1]:
        return None
    matmul = graph.op(transpose.input[0], "MatMul")
    expand = graph.op(_uncast(graph, matmul.input[0]), "Expand") if matmul is not None else None
    if matmul is None or expand is None or not _counts_up(graph, matmul.input[1]):
        return None
    return expand.input[0], scale


def _counts_up(graph: Lookups, name: str) -> bool:
    """Whether `name` is Range(0, n, 1), through Casts and Unsqueezes: positions 0..seq-1, RotaryEmbedding's offset 0."""
    while (node := graph.made.get(name)) is not None and node.op_type in ("Cast", "Unsqueeze"):
        name = node.input[0]
    found = graph.op(name, "Range")
    start = graph.value(_uncast(graph, found.input[0])) if found is not None else None
    step = graph.value(_uncast(graph, found.input[2])) if found is not None else None
    return start is not None and step is not None and start.item() == 0 and step.item() == 1


def _head_split(graph: Lookups, names: list[str]) -> dict | None:
    """For q, k, v = `Squeeze(Split(Transpose(Reshape(qkv, (b, -1, 3, heads, d)), (0, 3, 2, 1, 4)), axis=2), 2)`:
    qkv (batch, seq, 3·heads·d), the heads and d."""
    squeezes = [graph.op(n, "Squeeze") for n in names]
    splits = [graph.made.get(s.input[0]) if s is not None else None for s in squeezes]
    split = splits[0]
    if split is None or split.op_type != "Split" or any(s is not split for s in splits) or len(split.output) != 3:
        return None
    if [list(split.output).index(s.input[0]) for s in squeezes if s is not None] != [0, 1, 2]:
        return None
    sizes = graph.value(split.input[1]) if len(split.input) > 1 and split.input[1] else np.ones(3)
    if attribute(split, "axis", 0) != 2 or sizes is None or len(set(sizes.tolist())) != 1:
        return None
    transpose = graph.op(split.input[0], "Transpose")
    if transpose is None or list(attribute(transpose, "perm", [])) != [0, 3, 2, 1, 4]:
        return None
    reshape = graph.op(transpose.input[0], "Reshape")
    shape = [graph.concat_item(reshape.input[1], i) for i in (2, 3, 4)] if reshape is not None else [None]
    if reshape is None or shape[0] != 3 or shape[1] is None or shape[2] is None or min(shape[1], shape[2]) <= 0:
        return None
    return {"qkv": reshape.input[0], "heads": shape[1], "head_dim": shape[2]}


def _caches(model: onnx.ModelProto, made: dict[bytes, tuple[str, str]], rotary: dict, rows: int) -> tuple[str, str]:
    """The names of the (rows, d/2) cos and sin initializers for one rotary table, added on first use.

    The angle is computed in fp32 as the export does (position times inverse frequency), its cos and sin in fp64."""
    key = rotary["table"].tobytes()
    if key not in made:
        cos_scale, sin_scale, inverse = rotary["table"][0], rotary["table"][1], rotary["table"][2:]
        angles = (np.arange(rows, dtype=np.float32)[:, None] * inverse[None, :]).astype(np.float64)  # (rows, d/2)
        names = f"{_PREFIX}_cos_{len(made)}", f"{_PREFIX}_sin_{len(made)}"
        for table, name in ((np.cos(angles) * cos_scale, names[0]), (np.sin(angles) * sin_scale, names[1])):
            model.graph.initializer.append(numpy_helper.from_array(table.astype(np.float32), name))
        made[key] = names
    return made[key]


def _replace(model: onnx.ModelProto, match: dict, index: int, caches: tuple[str, str]) -> None:
    """Insert Split, two RotaryEmbedding and MultiHeadAttention in place of the Softmax; the old core becomes dead."""
    name, width = f"{_PREFIX}_{index}", match["heads"] * match["head_dim"]
    start = f"{_PREFIX}_start"  # (1,): RotaryEmbedding's position offset
    if not any(i.name == start for i in model.graph.initializer):
        model.graph.initializer.append(numpy_helper.from_array(np.zeros(1, dtype=np.int64), start))
    sizes = f"{name}_sizes"
    model.graph.initializer.append(numpy_helper.from_array(np.full(3, width, dtype=np.int64), sizes))
    q, k, v = (f"{name}_{part}" for part in ("q", "k", "v"))
    rotary = dict(
        domain="com.microsoft", interleaved=0, num_heads=match["heads"], rotary_embedding_dim=match["head_dim"]
    )
    nodes = [
        helper.make_node("Split", [match["qkv"], sizes], [q, k, v], name=f"{name}_split", axis=-1),
        *(
            helper.make_node("RotaryEmbedding", [x, start, *caches], [f"{x}_rotated"], name=f"{x}_rotary", **rotary)
            for x in (q, k)
        ),
        helper.make_node(
            "MultiHeadAttention",
            [f"{q}_rotated", f"{k}_rotated", v, "", "", match["mask"]],
            [match["reshape"].output[0]],
            name=name,
            domain="com.microsoft",
            num_heads=match["heads"],
            scale=match["scale"],
        ),
    ]
    reshape = match["reshape"]
    reshape.output[0] = f"{reshape.output[0]}_edgec_unfused"  # now read by nobody: removed with the rest of the core
    position = next(i for i, n in enumerate(model.graph.node) if n.name == match["name"])
    for offset, node in enumerate(nodes):
        model.graph.node.insert(position + offset, node)
