"""Outlier channels of a MatMul input computed in float, the rest in int8 (after LLM.int8()'s decomposition).

all-mpnet-base-v2's FFN down-projections read GELU outputs with 1-4 channels (of 3072) reaching 30-100 while the
other channels stay under 3-8: one per-tensor int8 scale set by those channels leaves the rest a handful of levels.
Per input channel j, X·W = Σ_j X_j W_j, so the outlier channels O can be taken out exactly:

    X·W = Q(X)·Q(W with rows O zeroed)  +  X[:, O]·W[O, :]

The int8 part's range is calibrated without O (their clipped values meet zero weight rows); the float part is a
Gather of k columns and a (k, out) MatMul, added where the output is summed anyway (the residual Sum).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgec.ops.graph import consumers

SUFFIX = "_edgec_outliers"
FACTOR = 2.0
"""A channel is an outlier when its calibration |max| exceeds this many times the bulk's level."""
BULK_QUANTILE = 0.9999
"""The bulk's level: this quantile of |x| over the channels that are not outlier candidates."""


def outlier_channels(
    peak: np.ndarray, rows: np.ndarray, *, factor: float = FACTOR, limit: int | None = None
) -> np.ndarray:
    """Input channels whose |max| over every calibration token (`peak`, (channels,)) is over `factor` x the bulk's
    level, largest first; the bulk's level comes from `rows` (tokens, channels), a sample of the tokens.

    At most `limit` channels (default: 1 in 256, at least 1) are candidates, so the float part stays small.
    """
    width = len(peak)
    limit = limit or max(1, width // 256)
    candidates = np.argsort(-peak, kind="stable")[:limit]
    bulk = np.quantile(np.abs(np.delete(rows, candidates, axis=1)), BULK_QUANTILE) if width > limit else 0.0
    return np.array([c for c in candidates if peak[c] > factor * max(bulk, 1e-12)], dtype=np.int64)


def split_outlier_channels(model: onnx.ModelProto, matmul: onnx.NodeProto, channels: np.ndarray) -> None:
    """Rewrite `Y = MatMul(X, W)` as `Y = MatMul(X, W with rows `channels` zeroed) + MatMul(Gather(X, channels), W[channels])`.

    The float term joins the Sum that reads Y where Y has exactly one reader and it is a Sum (a residual join);
    otherwise an Add does. The new MatMul is named with SUFFIX, which tells the quantizer to leave it in float.
    """
    weights = {i.name: i for i in model.graph.initializer}
    weight = numpy_helper.to_array(weights[matmul.input[1]])  # (in, out)
    x, name = matmul.input[0], matmul.name or matmul.output[0]
    inliers = weight.copy()
    inliers[channels] = 0.0
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(inliers, f"{matmul.input[1]}_edgec_inliers"),
            numpy_helper.from_array(weight[channels], f"{name}{SUFFIX}_weight"),
            numpy_helper.from_array(channels, f"{name}{SUFFIX}_channels"),
        ]
    )
    matmul.input[1] = f"{matmul.input[1]}_edgec_inliers"
    picked, part = f"{name}{SUFFIX}_input", f"{name}{SUFFIX}_output"
    nodes = [
        helper.make_node("Gather", [x, f"{name}{SUFFIX}_channels"], [picked], name=f"{name}{SUFFIX}_gather", axis=-1),
        helper.make_node("MatMul", [picked, f"{name}{SUFFIX}_weight"], [part], name=f"{name}{SUFFIX}"),
    ]
    readers = consumers(model)[matmul.output[0]]
    if len(readers) == 1 and readers[0].op_type == "Sum":
        readers[0].input.append(part)
    else:
        original = matmul.output[0]
        matmul.output[0] = f"{original}_edgec_int8_part"
        nodes.append(helper.make_node("Add", [matmul.output[0], part], [original], name=f"{name}{SUFFIX}_add"))
    position = list(model.graph.node).index(matmul) + 1
    for offset, node in enumerate(nodes):
        model.graph.node.insert(position + offset, node)
