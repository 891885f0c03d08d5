"""Per-layer least squares over whole weights: refit a pruned sub-layer's output projection to a target model's.

Mask tuning (ops.least_squares) gives each kept unit one scale: a few hundred unknowns per sub-layer, which cannot
overfit, and cannot undo much either. Refitting the output projection itself (K-prune's weight tuning, arXiv
2308.03449; SparseGPT and OBS-style pruning update weights the same way) lets the kept units take over what the
removed ones wrote into the residual stream: for inputs a_t (what the projection reads: the kept heads' contexts
or the kept neurons' activations) and the target sub-layer's output y_t, choose W' to minimise

    Σ_t ‖W' a_t − y_t‖² + λ ‖W' − W‖²,  so  W'ᵀ = (AᵀA + λI)⁻¹ (AᵀY + λ Wᵀ),

one (inputs × inputs) system shared by every output row. λ is a share of AᵀA's mean diagonal, pulling W' towards
the weight it replaces where the calibration tokens say little; it is the only guard against overfitting them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgec.ops.least_squares import TargetSums


@dataclass
class WeightEquations:
    """Running sums of one output projection's refit over calibration batches (fp64)."""

    weight: torch.Tensor
    """(hidden, inputs): the projection's weight now, what the ridge pulls towards."""
    gram: torch.Tensor  # (inputs, inputs): Σ_t a_t a_tᵀ
    cross: torch.Tensor  # (inputs, hidden): Σ_t a_t y_tᵀ
    input_sums: torch.Tensor  # (inputs,): Σ_t a_t
    target: TargetSums

    @classmethod
    def empty(cls, weight: torch.Tensor) -> WeightEquations:
        hidden, inputs = weight.shape
        zeros = lambda *shape: torch.zeros(*shape, dtype=torch.float64)  # noqa: E731
        return cls(
            weight.detach().double(),
            zeros(inputs, inputs),
            zeros(inputs, hidden),
            zeros(inputs),
            TargetSums.empty(hidden),
        )

    def add(self, inputs: torch.Tensor, target: torch.Tensor) -> None:
        """inputs (tokens, inputs): what the projection reads; target (tokens, hidden): what it should write (without
        its bias). Per-batch products in fp32, running sums in fp64."""
        a, y = inputs.float(), target.float()
        self.gram += (a.T @ a).double()
        self.cross += (a.T @ y).double()
        self.input_sums += a.sum(dim=0).double()
        self.target.add(y)

    def error(self, weight: torch.Tensor, bias_shift: torch.Tensor | None = None) -> float:
        """Σ_t ‖W a_t + Δb − y_t‖²."""
        w = weight.double()
        value = float(((w @ self.gram) * w).sum() - 2 * (w * self.cross.T).sum()) + self.target.squares
        if bias_shift is not None:
            value += self.target.shift_error(bias_shift, w @ self.input_sums)
        return value

    def solve(self, *, damping: float, fit_bias: bool = False) -> WeightSolution:
        """W' (and, with `fit_bias`, a bias shift: the mean of what W' misses) with λ = `damping` × AᵀA's mean
        diagonal; `ok` when finite and no worse than the weight as it is."""
        tokens = self.target.tokens
        if tokens == 0:
            return WeightSolution(self.weight, None, True)
        gram, cross = self.gram, self.cross
        mean_target, mean_input = self.target.mean(), self.input_sums / tokens
        if fit_bias:  # centred: the shift absorbs each output's mean
            gram = gram - tokens * torch.outer(mean_input, mean_input)
            cross = cross - tokens * torch.outer(mean_input, mean_target)
        ridge = damping * float(gram.diagonal().mean().clamp(min=1e-12))
        eye = torch.eye(gram.shape[0], dtype=torch.float64)
        weight = torch.linalg.solve(gram + ridge * eye, cross + ridge * self.weight.T).T
        shift = mean_target - weight @ mean_input if fit_bias else None
        finite = bool(torch.isfinite(weight).all()) and (shift is None or bool(torch.isfinite(shift).all()))
        no_shift = torch.zeros_like(self.target.total)
        return WeightSolution(weight, shift, finite and self.error(weight, shift) <= self.error(self.weight, no_shift))


@dataclass(frozen=True)
class WeightSolution:
    weight: torch.Tensor
    """(hidden, inputs) float64: the projection's new weight."""
    shift: torch.Tensor | None
    """(hidden,) float64 added to the projection's bias, or None when the bias was not fitted."""
    ok: bool
    """Finite and no worse than the weight as it was."""
