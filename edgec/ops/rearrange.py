"""Mask rearrangement (Kwon et al. 2022, §4.2): which units one layer keeps, by its block of the Fisher information.

Removing the set R of one layer's units changes the loss by about ½·Σ_n (Σ_{i∈R} g_ni)² = ½·(1−m)ᵀ F (1−m), with
g_n example n's mask gradients and F = Σ_n g_n g_nᵀ the layer's Fisher block. The mask search ranks units by F's
diagonal alone, as if their effects never cancelled or added up. Rearrangement keeps the search's count per layer
and exchanges kept and removed units while (1−m)ᵀ F (1−m) falls: it can only lower that objective.
"""

from __future__ import annotations

import numpy as np


def removal_loss(keep: np.ndarray, fisher: np.ndarray) -> float:
    """(1−m)ᵀ F (1−m): the block-diagonal Fisher estimate (x2) of the loss of removing the units not kept."""
    removed = ~keep
    return float(fisher[np.ix_(removed, removed)].sum())


def rearrange(keep: np.ndarray, fisher: np.ndarray, max_passes: int = 3) -> np.ndarray:
    """A keep mask of the same count whose removal loss is at most that of `keep`.

    Kept units are visited from the least important (F's diagonal); each is swapped with the removed unit whose
    exchange lowers the objective most, if any does. Q(R) = Σ_{i,k∈R} F_ik changes by
    2c_u + F_uu − 2(c_j + F_uj) + F_jj when u joins R and j leaves it, c = Σ_{i∈R} F_i· being kept up to date.
    Passes repeat until one changes nothing (or `max_passes`).
    """
    removed = ~np.asarray(keep, dtype=bool)
    if removed.all() or not removed.any():
        return ~removed
    fisher = np.asarray(fisher, dtype=np.float64)
    diagonal = fisher.diagonal()
    tolerance = 1e-12 * max(float(diagonal.max()), 1e-300)
    within = fisher[removed].sum(axis=0)  # c_j = Σ_{i∈R} F_ij
    for _ in range(max_passes):
        changed = False
        for u in np.flatnonzero(~removed)[np.argsort(diagonal[~removed], kind="stable")]:
            candidates = np.flatnonzero(removed)
            change = (
                2 * within[u] + diagonal[u] - 2 * (within[candidates] + fisher[u, candidates]) + diagonal[candidates]
            )
            best = int(np.argmin(change))
            if change[best] < -tolerance:
                j = candidates[best]
                removed[u], removed[j] = True, False
                within += fisher[u] - fisher[j]
                changed = True
        if not changed:
            break
    return ~removed
