"""MAC counts, mask search, least squares and mask gradients: the pruning math on small tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgec.errors import ConfigError
from edgec.ops.importance import mask_heads, mask_neurons, sensitivity_loss
from edgec.ops.least_squares import NormalEquations
from edgec.ops.macs import encoder_macs, unit_costs
from edgec.ops.mask_selection import search_masks
from edgec.ops.weight_least_squares import WeightEquations


def test_unit_costs_count_projections_and_attention_products():
    costs = unit_costs([3, 5], hidden=8, head_dim=2)
    assert costs.head == 4 * 8 * 2 * 8 + 2 * 2 * (9 + 25)
    assert costs.neuron == 2 * 8 * 8
    assert encoder_macs([2, 1], [4, 0], costs) == (3 * costs.head + 4 * costs.neuron) / 2


def _scores(layers=3, heads=4, neurons=16, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.random(heads) for _ in range(layers)], [rng.random(neurons) for _ in range(layers)]


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.8])
def test_search_respects_the_budget_and_keeps_the_most_important(fraction):
    heads, neurons = _scores()
    costs = unit_costs([10] * 4, hidden=8, head_dim=2)
    total = 12 * costs.head + 48 * costs.neuron
    keep_heads, keep_neurons = search_masks(heads, neurons, costs, (1 - fraction) * total)
    used = sum(k.sum() for k in keep_heads) * costs.head + sum(k.sum() for k in keep_neurons) * costs.neuron
    assert used <= (1 - fraction) * total
    assert used >= (1 - fraction) * total - costs.head  # nothing affordable left on the table
    kept_scores = np.concatenate(neurons)[np.concatenate(keep_neurons)]
    dropped_scores = np.concatenate(neurons)[~np.concatenate(keep_neurons)]
    assert kept_scores.size == 0 or dropped_scores.size == 0 or kept_scores.min() >= dropped_scores.max()


def test_full_budget_keeps_everything_even_units_of_zero_importance():
    heads, neurons = _scores()
    heads[0][:] = 0.0
    costs = unit_costs([10], hidden=8, head_dim=2)
    keep_heads, keep_neurons = search_masks(heads, neurons, costs, 12 * costs.head + 48 * costs.neuron)
    assert all(k.all() for k in keep_heads) and all(k.all() for k in keep_neurons)


def test_heads_only_keeps_every_neuron():
    heads, neurons = _scores()
    costs = unit_costs([10], hidden=8, head_dim=2)
    total = 12 * costs.head + 48 * costs.neuron
    keep_heads, keep_neurons = search_masks(heads, neurons, costs, total - 5 * costs.head, prune_neurons=False)
    assert all(k.all() for k in keep_neurons)
    assert sum(k.sum() for k in keep_heads) == 7


def test_impossible_budgets_are_config_errors():
    heads, neurons = _scores()
    costs = unit_costs([10], hidden=8, head_dim=2)
    total = 12 * costs.head + 48 * costs.neuron
    with pytest.raises(ConfigError, match="attention heads alone"):
        search_masks(heads, neurons, costs, 0.01 * total, prune_neurons=False)
    with pytest.raises(ConfigError, match="too small to keep any"):
        search_masks(heads, neurons, costs, 0.5 * costs.neuron)


@pytest.mark.parametrize("ridge", ["to-one", "relative"])
def test_least_squares_recovers_known_scales_and_bias(ridge):
    torch.manual_seed(0)
    units = torch.randn(200, 5, 8)  # (tokens, units, hidden)
    true_scales, bias = torch.tensor([1.5, 0.5, 1.0, 2.0, 0.8]), torch.randn(8)
    target = torch.einsum("tkh,k->th", units, true_scales) + bias
    equations = NormalEquations.empty(5, 8)
    equations.add_heads(units, target)
    solution = equations.solve(ridge=ridge, fit_bias=True)
    assert solution.ok
    assert torch.allclose(solution.scales.float(), true_scales, atol=1e-2)
    assert torch.allclose(solution.shift.float(), bias, atol=1e-2)
    assert equations.error(solution.scales, solution.shift) < 1e-3 * equations.error(torch.ones(5, dtype=torch.float64))
    assert equations.solve(ridge=ridge).shift is None  # without fit_bias the bias stays


def test_ridge_to_one_leaves_directions_of_tiny_curvature_at_one():
    # Unit 1 contributes almost nothing (eigenvalue << 1): its scale stays near 1, where a plain solve would explode.
    units = torch.zeros(4, 2, 3)
    units[:, 0, 0] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    units[:, 1, 1] = 1e-4
    target = 2 * units[:, 0] + 50 * units[:, 1]
    equations = NormalEquations.empty(2, 3)
    equations.add_heads(units, target)
    scales = equations.solve(ridge="to-one").scales
    assert abs(scales[0] - 2) < 1e-2 and abs(scales[1] - 1) < 1e-3


def test_neuron_equations_equal_the_explicit_head_form():
    torch.manual_seed(1)
    activations, weight, target = torch.randn(50, 6), torch.randn(4, 6), torch.randn(50, 4)
    factored, explicit = NormalEquations.empty(6, 4), NormalEquations.empty(6, 4)
    factored.add_neurons(activations, weight, target)
    explicit.add_heads(activations[:, :, None] * weight.T[None], target)  # u_tj = a_tj * w_j
    assert torch.allclose(factored.gram, explicit.gram, rtol=1e-4, atol=1e-4)
    assert torch.allclose(factored.rhs, explicit.rhs, rtol=1e-4, atol=1e-4)
    assert torch.allclose(factored.unit_sums, explicit.unit_sums, rtol=1e-4, atol=1e-4)


def _direct_error(
    contributions: torch.Tensor, target: torch.Tensor, scales: torch.Tensor, shift: torch.Tensor | None
) -> float:
    """‖Σ_j m_j u_j + Δb − t‖² computed from the data itself, not from the accumulated statistics."""
    fitted = torch.einsum("thd,h->td", contributions.double(), scales.double())
    if shift is not None:
        fitted = fitted + shift.double()
    return float(((fitted - target.double()) ** 2).sum())


@pytest.mark.parametrize("ridge", ["to-one", "relative"])
@pytest.mark.parametrize("tokens", [2, 200], ids=["ill-posed", "well-posed"])
def test_least_squares_judges_its_fit_by_the_true_residual(ridge, tokens):
    """The accept rule compares errors computed from running sums; they must be the real residuals (over two
    batches, with and without the bias shift), and a solution it accepts is no worse than no change."""
    torch.manual_seed(2)
    contributions, target = torch.randn(tokens, 3, 4), torch.randn(tokens, 4)
    equations = NormalEquations.empty(3, 4)
    equations.add_heads(contributions[: tokens // 2], target[: tokens // 2])
    equations.add_heads(contributions[tokens // 2 :], target[tokens // 2 :])
    solution = equations.solve(ridge=ridge, fit_bias=True)
    ones = torch.ones(3, dtype=torch.float64)
    for scales, shift in ((ones, None), (solution.scales, None), (solution.scales, solution.shift)):
        assert equations.error(scales, shift) == pytest.approx(
            _direct_error(contributions, target, scales, shift), rel=1e-6
        )
    if solution.ok:
        assert (
            _direct_error(contributions, target, solution.scales, solution.shift)
            <= _direct_error(contributions, target, ones, None) + 1e-6
        )


def test_a_well_posed_fit_recovers_the_scales_and_an_out_of_range_one_is_refused():
    torch.manual_seed(3)
    contributions = torch.randn(500, 3, 4)
    true_scales = torch.tensor([0.5, 1.5, 2.0])
    equations = NormalEquations.empty(3, 4)
    equations.add_heads(contributions, torch.einsum("thd,h->td", contributions, true_scales))
    solution = equations.solve(ridge="relative")
    assert solution.ok and torch.allclose(solution.scales.float(), true_scales, atol=1e-2)
    assert equations.error(solution.scales) < 1e-3 * equations.error(torch.ones(3, dtype=torch.float64))
    assert not equations.solve(ridge="relative", max_scale=1.8).ok  # 2.0 is beyond the bound: refused, not clipped


def test_masks_scale_the_right_slices():
    x = torch.ones(2, 3, 8)  # (batch, seq, heads * head_dim) with 4 heads of 2
    mask = torch.tensor([[1.0, 0.0, 1.0, 0.5], [0.0, 1.0, 1.0, 1.0]])
    out = mask_heads(x, mask)
    assert out[0, :, 2:4].abs().sum() == 0 and torch.all(out[0, :, 6:8] == 0.5) and out[1, :, 0:2].abs().sum() == 0
    assert torch.equal(
        mask_neurons(torch.ones(2, 3, 4), torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 1]]))[1, 2],
        torch.tensor([0.0, 0, 0, 1]),
    )


def test_sensitivity_loss_gives_per_example_gradients():
    mask = torch.ones(3, 4, requires_grad=True)
    features = torch.randn(3, 4)
    embedding = features * mask  # each example depends on its own mask row only
    loss = sensitivity_loss(
        "feature-extraction", (embedding,), torch.ones(3, 2), None, torch.Generator().manual_seed(0)
    )
    (grad,) = torch.autograd.grad(loss, [mask])
    assert grad.shape == (3, 4) and grad.abs().sum() > 0
    logits = torch.randn(3, 5, requires_grad=True)
    loss = sensitivity_loss(
        "sequence-classification", (logits,), torch.ones(3, 2), torch.tensor([0, 1, 2]), torch.Generator()
    )
    assert torch.isclose(loss, torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2]), reduction="sum"))


def test_weight_refit_recovers_a_known_projection_and_bias_and_its_error_is_the_true_residual():
    torch.manual_seed(2)
    inputs, true_weight, bias = torch.randn(400, 6), torch.randn(4, 6), torch.randn(4)
    target = inputs @ true_weight.T + bias
    current = true_weight + torch.randn(4, 6)  # what pruning left: the right inputs, the wrong weight
    equations = WeightEquations.empty(current)
    for chunk in range(4):  # summed batch by batch, as the tuning pass adds them
        equations.add(inputs[chunk * 100 : (chunk + 1) * 100], target[chunk * 100 : (chunk + 1) * 100])
    solution = equations.solve(damping=1e-8, fit_bias=True)
    assert solution.ok
    assert torch.allclose(solution.weight.float(), true_weight, atol=1e-3)
    assert torch.allclose(solution.shift.float(), bias, atol=1e-3)
    for weight, shift in ((current.double(), None), (solution.weight, solution.shift)):
        explicit = inputs.double() @ weight.T + (0 if shift is None else shift) - target.double()
        # batches are multiplied in fp32 (summed in fp64): exact to ~1e-7 of the target's squared norm
        assert equations.error(weight, shift) == pytest.approx(
            float((explicit**2).sum()), abs=1e-6 * equations.target.squares
        )
    assert equations.solve(damping=1e-8).shift is None  # without fit_bias the bias stays


def test_weight_refit_ridge_keeps_the_current_weight_where_the_tokens_say_nothing():
    # Input 1 is never active: no token says what its column should be, so it stays as it was.
    inputs = torch.zeros(50, 2)
    inputs[:, 0] = torch.linspace(-1, 1, 50)
    current = torch.tensor([[1.0, 7.0], [0.5, -3.0]])
    equations = WeightEquations.empty(current)
    equations.add(inputs, inputs[:, :1] @ torch.tensor([[2.0, -1.0]]))
    weight = equations.solve(damping=1e-3).weight
    assert torch.allclose(weight[:, 1].float(), current[:, 1]) and torch.allclose(
        weight[:, 0].float(), torch.tensor([2.0, -1.0]), atol=1e-2
    )
    assert equations.solve(damping=1e6).weight.float().sub(current).abs().max() < 1e-3  # a huge ridge: no change
