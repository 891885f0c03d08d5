"""Which heads and neurons to keep under a MAC budget, from their Fisher importance (Kwon et al. 2022)."""

from __future__ import annotations

import numpy as np

from edgec.errors import ConfigError
from edgec.ops.macs import UnitCosts


def search_masks(
    head_scores: list[np.ndarray],
    neuron_scores: list[np.ndarray],
    costs: UnitCosts,
    budget: float,
    *,
    prune_heads: bool = True,
    prune_neurons: bool = True,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Boolean keep masks per layer, for heads and for neurons, of most total importance within budget.

    `budget` is in the same unit as the costs (MACs summed over the texts). Heads and neurons each have one
    cost, so for every count of kept heads the best choice is the most important ones, and the rest of the
    budget goes to the most important neurons: trying every head count finds the optimum of this
    (diagonal-Fisher) objective exactly.
    """
    all_heads, all_neurons = np.concatenate([[], *head_scores]), np.concatenate([[], *neuron_scores])
    head_order, neuron_order = np.argsort(-all_heads, kind="stable"), np.argsort(-all_neurons, kind="stable")
    head_gain = np.concatenate([[0.0], np.cumsum(all_heads[head_order])])
    neuron_gain = np.concatenate([[0.0], np.cumsum(all_neurons[neuron_order])])
    total_heads, total_neurons = all_heads.size, all_neurons.size
    head_counts = np.arange(total_heads + 1) if prune_heads else np.array([total_heads])
    neuron_room = np.floor((budget - head_counts * costs.head) / costs.neuron + 1e-9)
    neuron_counts = (
        np.minimum(neuron_room, total_neurons)
        if prune_neurons
        else np.where(neuron_room >= total_neurons, total_neurons, -1)
    )
    feasible = neuron_counts >= 0
    if not feasible.any():
        raise ConfigError(_infeasible(costs, budget, total_heads, total_neurons, prune_heads, prune_neurons))
    neuron_counts = np.where(feasible, neuron_counts, 0).astype(int)
    value = np.where(feasible, head_gain[head_counts] + neuron_gain[neuron_counts], -np.inf)
    kept = head_counts + neuron_counts
    best = int(np.lexsort((kept, value))[-1])  # most importance; among ties (units of zero importance) most units
    if kept[best] == 0:
        raise ConfigError("the prune budget is too small to keep any head or neuron; use a smaller --prune fraction")
    return _split(head_scores, head_order[: head_counts[best]]), _split(
        neuron_scores, neuron_order[: neuron_counts[best]]
    )


def _split(per_layer: list[np.ndarray], kept: np.ndarray) -> list[np.ndarray]:
    """Flat indices of kept units -> one boolean mask per layer."""
    flat = np.zeros(sum(len(s) for s in per_layer), dtype=bool)
    flat[kept] = True
    return np.split(flat, np.cumsum([len(s) for s in per_layer])[:-1])


def _infeasible(
    costs: UnitCosts, budget: float, heads: int, neurons: int, prune_heads: bool, prune_neurons: bool
) -> str:
    total = heads * costs.head + neurons * costs.neuron
    fixed = (0 if prune_heads else heads * costs.head) + (0 if prune_neurons else neurons * costs.neuron)
    unit = "FFN neurons" if prune_neurons else "attention heads"
    return (
        f"removing {1 - budget / total:.0%} of the encoder's compute is impossible with {unit} alone "
        f"(at most {1 - fixed / total:.0%}); use a smaller --prune or allow more --prune-units"
    )


def round_neurons(neuron_scores: list[np.ndarray], keep: list[np.ndarray], multiple: int) -> list[np.ndarray]:
    """Each layer's kept FFN neurons rounded to a multiple of `multiple` (int8 GEMMs pack N and K in blocks), never more
    neurons in all than `keep` holds, so the MAC budget still holds.

    A layer goes to the nearest multiple (its most important dropped neurons come back, or its least important kept
    ones go); a whole layer stays whole. Then, while the total is over, the layer whose last block is least important
    loses that block.
    """
    if multiple <= 1:
        return keep
    order = [np.argsort(-s, kind="stable") for s in neuron_scores]  # per layer, most important first
    width = [len(s) for s in neuron_scores]
    target = [
        w if k.sum() == w else min(w, multiple * int(np.floor(k.sum() / multiple + 0.5))) for k, w in zip(keep, width)
    ]
    room = int(sum(k.sum() for k in keep))

    def last_block(i: int) -> float:
        return (
            float(neuron_scores[i][order[i][target[i] - multiple : target[i]]].sum())
            if target[i] >= multiple
            else np.inf
        )

    while sum(target) > room:
        i = min((j for j in range(len(target)) if target[j] > 0), key=last_block)
        target[i] = max(0, target[i] - multiple) if target[i] % multiple == 0 else multiple * (target[i] // multiple)
    masks = []
    for i, w in enumerate(width):
        mask = np.zeros(w, dtype=bool)
        mask[order[i][: target[i]]] = True
        masks.append(mask)
    return masks
