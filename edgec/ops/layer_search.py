"""Whole layers as a pruning unit: trade layers against heads and neurons under one MAC budget.

Every score is in one currency, the Fisher estimate of the loss a removal costs (½·F, the ½ dropped): a head's
or neuron's diagonal Fisher, and a layer's Fisher of a gate on its residual branch (the layer computes
x + g·(layer(x) − x); g = 0 skips it). Removing a layer frees its heads' and neurons' MACs for the rest and also
saves what MACs do not count (its LayerNorms, residual adds, kernel launches).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgec.errors import ConfigError
from edgec.ops.macs import UnitCosts
from edgec.ops.mask_selection import search_masks


@dataclass(frozen=True)
class Plan:
    """What pruning keeps: per layer, boolean masks of heads and neurons; and a boolean per layer.

    A removed layer's unit masks are all False."""

    heads: list[np.ndarray]
    neurons: list[np.ndarray]
    layers: np.ndarray


def search_plan(
    head_scores: list[np.ndarray],
    neuron_scores: list[np.ndarray],
    layer_scores: np.ndarray | None,
    costs: UnitCosts,
    budget: float,
    *,
    prune_heads: bool = True,
    prune_neurons: bool = True,
    max_layers: int | None = None,
) -> Plan:
    """The plan of least estimated loss within `budget` (MACs summed over the texts, as the costs).

    Without layer scores every layer stays and the heads and neurons come from `search_masks`. With them, for
    every k the k layers of least score go (layers cost the same MACs before pruning, so among k-layer removals
    the cheapest in loss is the natural candidate) and `search_masks` fills the budget from the layers that stay;
    the k of least total estimated loss wins, fewer layers removed on ties. At least one layer stays, and at most
    `max_layers` (with layer scores): k starts at the count over it.
    """
    count = len(head_scores)
    order = np.argsort(layer_scores, kind="stable") if layer_scores is not None else np.array([], dtype=int)
    fewest_removed = 0 if layer_scores is None or max_layers is None else max(count - max_layers, 0)
    best, best_loss, first_error = None, np.inf, None
    for removed_count in range(fewest_removed, count if layer_scores is not None else 1):
        keep = np.ones(count, dtype=bool)
        keep[order[:removed_count]] = False
        try:
            heads, neurons = search_masks(
                [s if k else s[:0] for s, k in zip(head_scores, keep)],
                [s if k else s[:0] for s, k in zip(neuron_scores, keep)],
                costs,
                budget,
                prune_heads=prune_heads,
                prune_neurons=prune_neurons,
            )
        except ConfigError as error:
            first_error = first_error or error
            continue
        heads = [h if k else np.zeros(len(s), dtype=bool) for h, s, k in zip(heads, head_scores, keep)]
        neurons = [n if k else np.zeros(len(s), dtype=bool) for n, s, k in zip(neurons, neuron_scores, keep)]
        plan = Plan(heads, neurons, keep)
        loss = estimated_loss(plan, head_scores, neuron_scores, layer_scores)
        if loss < best_loss:
            best, best_loss = plan, loss
    if best is None:
        raise first_error
    return best


def estimated_loss(
    plan: Plan, head_scores: list[np.ndarray], neuron_scores: list[np.ndarray], layer_scores: np.ndarray | None
) -> float:
    """Σ scores of what the plan removes: a removed layer counts its layer score, not its units'."""
    loss = 0.0
    for i, kept_layer in enumerate(plan.layers):
        if kept_layer:
            loss += float(head_scores[i][~plan.heads[i]].sum() + neuron_scores[i][~plan.neurons[i]].sum())
        else:
            loss += float(layer_scores[i])
    return loss
