"""Mask rearrangement and the layer search: the block-diagonal Fisher objective and whole layers as units."""

from __future__ import annotations

import numpy as np
import pytest

from edgec.ops.layer_search import estimated_loss, search_plan
from edgec.ops.macs import unit_costs
from edgec.ops.mask_selection import search_masks
from edgec.ops.rearrange import rearrange, removal_loss


def _fisher(units: int, examples: int, seed: int) -> np.ndarray:
    grads = np.random.default_rng(seed).normal(size=(examples, units)) * np.random.default_rng(seed + 1).random(units)
    return grads.T @ grads  # (units, units): Σ_n g_n g_nᵀ


@pytest.mark.parametrize("seed", range(20))
def test_rearrangement_never_worsens_the_objective_and_keeps_the_count(seed):
    rng = np.random.default_rng(seed)
    units = int(rng.integers(2, 40))
    fisher = _fisher(units, int(rng.integers(1, 30)), seed)
    keep = np.argsort(-fisher.diagonal()) < int(rng.integers(1, units))  # the diagonal search's choice
    rearranged = rearrange(keep, fisher)
    assert rearranged.sum() == keep.sum()
    assert removal_loss(rearranged, fisher) <= removal_loss(keep, fisher) + 1e-9


def test_rearrangement_removes_units_whose_effects_cancel():
    # Units 0 and 1 matter most one by one, but their gradients cancel: removing both costs nothing.
    grads = np.array([[3.0, -3.0, 1.0], [-3.0, 3.0, 1.0]])  # (examples, units)
    fisher = grads.T @ grads
    diagonal_choice = np.array([True, False, False])  # keeps one of the two of largest diagonal
    rearranged = rearrange(diagonal_choice, fisher)
    assert rearranged.tolist() == [False, False, True]
    assert removal_loss(rearranged, fisher) == 0.0 < removal_loss(diagonal_choice, fisher)


def test_nothing_to_rearrange_when_all_or_none_are_kept():
    fisher = _fisher(5, 4, 0)
    assert rearrange(np.ones(5, dtype=bool), fisher).all() and not rearrange(np.zeros(5, dtype=bool), fisher).any()


def _scores(layers=4, heads=4, neurons=16, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.random(heads) for _ in range(layers)], [rng.random(neurons) for _ in range(layers)]


def test_a_layer_that_costs_nothing_goes_whole_and_frees_its_budget():
    heads, neurons = _scores()
    costs = unit_costs([10], hidden=8, head_dim=2)
    total = 16 * costs.head + 64 * costs.neuron
    layer_scores = np.array([5.0, 0.01, 5.0, 5.0])  # skipping layer 1 costs far less than its units' scores
    plan = search_plan(heads, neurons, layer_scores, costs, 0.7 * total)
    assert plan.layers.tolist() == [True, False, True, True]
    assert not plan.heads[1].any() and not plan.neurons[1].any()
    used = sum(h.sum() for h in plan.heads) * costs.head + sum(n.sum() for n in plan.neurons) * costs.neuron
    assert used <= 0.7 * total
    units_only = search_plan(heads, neurons, None, costs, 0.7 * total)
    assert units_only.layers.all()
    assert estimated_loss(plan, heads, neurons, layer_scores) < estimated_loss(units_only, heads, neurons, layer_scores)


def test_layers_that_matter_stay_and_the_plan_equals_the_unit_search():
    heads, neurons = _scores()
    costs = unit_costs([10], hidden=8, head_dim=2)
    total = 16 * costs.head + 64 * costs.neuron
    plan = search_plan(heads, neurons, np.full(4, 1e6), costs, 0.6 * total)
    expected = search_masks(heads, neurons, costs, 0.6 * total)
    assert plan.layers.all()
    assert all((a == b).all() for a, b in zip(plan.heads + plan.neurons, expected[0] + expected[1]))


def test_a_layer_cap_removes_the_least_important_layers_first_and_the_units_fill_the_budget():
    heads, neurons = _scores()
    costs = unit_costs([10], hidden=8, head_dim=2)
    total = 16 * costs.head + 64 * costs.neuron
    layer_scores = np.full(4, 1e6)  # every layer matters more than any unit: uncapped, all four stay
    layer_scores[[2, 0]] = [1e5, 2e5]
    assert search_plan(heads, neurons, layer_scores, costs, 0.6 * total).layers.all()
    plan = search_plan(heads, neurons, layer_scores, costs, 0.6 * total, max_layers=2)
    assert plan.layers.tolist() == [False, True, False, True]  # the two least important went
    used = sum(h.sum() for h in plan.heads) * costs.head + sum(n.sum() for n in plan.neurons) * costs.neuron
    assert used <= 0.6 * total
    # the two layers kept hold half the units, so the budget leaves room for more than half of them: they stay whole
    assert all(plan.heads[i].all() and plan.neurons[i].all() for i in (1, 3))
    # a cap at or above the layer count changes nothing
    assert search_plan(heads, neurons, layer_scores, costs, 0.6 * total, max_layers=4).layers.all()


def test_layers_alone_can_meet_a_budget_the_units_cannot():
    heads, neurons = _scores()
    costs = unit_costs([10], hidden=8, head_dim=2)
    total = 16 * costs.head + 64 * costs.neuron
    plan = search_plan(
        heads, neurons, np.array([3.0, 1.0, 2.0, 4.0]), costs, 0.5 * total, prune_heads=False, prune_neurons=False
    )
    assert plan.layers.tolist() == [True, False, False, True]  # the two least important layers
    assert all(h.all() for h, kept in zip(plan.heads, plan.layers) if kept)
