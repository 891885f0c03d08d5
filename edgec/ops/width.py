"""Hidden-size pruning's arithmetic: the width to keep, and which heads a narrower model can still hold."""

from __future__ import annotations

import numpy as np

from edgec.errors import ConfigError

WIDTH_EXPONENT = 0.5
"""Default width: the kept share of MACs to this power (the rest of the cut comes from heads, neurons and layers)."""


def default_width(hidden: int, head_dim: int, kept_share: float, exponent: float = WIDTH_EXPONENT) -> int:
    """hidden x kept_share^exponent, rounded to whole heads (transformers derives the head size from the width)."""
    heads = max(1, round(hidden * kept_share**exponent / head_dim))
    return min(hidden, heads * head_dim)


def check_width(width: int, hidden: int, head_dim: int) -> None:
    if not (0 < width <= hidden and width % head_dim == 0):
        raise ConfigError(
            f"hidden size {width} must be a multiple of the head size {head_dim} in (0, {hidden}]; "
            f"e.g. --prune-hidden-size {max(head_dim, hidden // 2 // head_dim * head_dim)}"
        )


def allowed_heads(head_scores: list[np.ndarray], capacity: int, columns: list[np.ndarray] | None) -> list[np.ndarray]:
    """Per layer, the indices of the heads that may stay when the width holds `capacity` heads: each layer's
    `capacity` most important. With `columns` (MPNet: columns[i][j] is the position-bias column head j of layer i
    reads; all layers share the bias) the heads reading the `capacity` columns of most importance summed over the
    layers, so that the saved layout needs no more columns than it has head slots."""
    if columns is None:
        return [np.sort(np.argsort(-s, kind="stable")[:capacity]) for s in head_scores]
    total = np.zeros(max((c.max() + 1 for c in columns if len(c)), default=0))
    for s, c in zip(head_scores, columns):
        np.add.at(total, c, s)
    chosen = np.argsort(-total, kind="stable")[:capacity]
    return [np.flatnonzero(np.isin(c, chosen)) for c in columns]


def restrict(scores: list[np.ndarray], allowed: list[np.ndarray]) -> list[np.ndarray]:
    """The scores of the allowed units only."""
    return [s[a] for s, a in zip(scores, allowed)]


def expand(masks: list[np.ndarray], allowed: list[np.ndarray], sizes: list[int]) -> list[np.ndarray]:
    """Keep masks over the allowed units -> keep masks over all units (the others not kept)."""
    full = [np.zeros(n, dtype=bool) for n in sizes]
    for f, m, a in zip(full, masks, allowed):
        f[a[m]] = True
    return full


def top_channels(scores: np.ndarray, width: int) -> list[int]:
    """The `width` channels of highest score, in ascending index order."""
    return sorted(np.argsort(-scores, kind="stable")[:width].tolist())
