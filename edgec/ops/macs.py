"""Multiply-accumulate counts of an encoder's prunable parts, at given sequence lengths."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class UnitCosts:
    """MACs one unit costs, summed over a set of texts (so costs follow the real length mix)."""

    head: float
    """One attention head: its Q, K, V rows and output columns (4·hidden·head_dim per token) plus its
    score and context products (2·head_dim·seq² per text)."""
    neuron: float
    """One FFN neuron: a row of the input Linear and a column of the output Linear (2·hidden per token; 3·hidden
    with a gate row)."""
    texts: int


def unit_costs(lengths: Sequence[int], hidden: int, head_dim: int, ffn_matrices: int = 2) -> UnitCosts:
    """Costs at the given token counts per text (padding excluded: it is not work a batch-1 device does).

    `ffn_matrices`: weight vectors of `hidden` each FFN neuron owns (2; 3 for a gated FFN such as ModernBERT's).
    """
    tokens = sum(lengths)
    squares = sum(n * n for n in lengths)
    head = 4 * hidden * head_dim * tokens + 2 * head_dim * squares
    return UnitCosts(head=head, neuron=ffn_matrices * hidden * tokens, texts=len(lengths))


def encoder_macs(heads: Sequence[int], neurons: Sequence[int], costs: UnitCosts) -> float:
    """MACs per text of the attention and FFN layers (embeddings and LayerNorms are not prunable)."""
    return (sum(heads) * costs.head + sum(neurons) * costs.neuron) / costs.texts
