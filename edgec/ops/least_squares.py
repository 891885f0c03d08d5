"""Per-layer least squares: rescale the kept units so a pruned sub-layer reproduces a target model's.

For one sub-layer, unit j adds a vector u_j (its output through the output projection) to every token,
so the sub-layer computes Σ_j m_j u_j + bias with all m_j = 1. Choosing m to minimise
‖Σ_j m_j u_j − t‖² over the calibration tokens, where t is what the target layer produced (minus
bias and the pruned model's residual), is a k×k linear system: G m = r, G = Σ u_j·u_k, r = Σ u_j·t.
Any fixed linear map of every u_j and t (a per-token weight, a centring) changes which error is minimised
but not the form, so callers choose the space by transforming what they add.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TargetSums:
    """What both least squares (unit scales here, whole weights in ops.weight_least_squares) keep of the target: its
    sums over the calibration tokens, from which the error of any fit and of any bias shift follows."""

    total: torch.Tensor  # (hidden,): Σ_t t_t
    squares: float = 0.0  # Σ_t ‖t_t‖²
    tokens: int = 0

    @classmethod
    def empty(cls, hidden: int) -> TargetSums:
        return cls(torch.zeros(hidden, dtype=torch.float64))

    def add(self, t: torch.Tensor) -> None:
        """t (tokens, hidden) in fp32; the sums are fp64."""
        self.total += t.sum(dim=0).double()
        self.squares += float((t.double() ** 2).sum())
        self.tokens += t.shape[0]

    def mean(self) -> torch.Tensor:
        return self.total / self.tokens

    def shift_error(self, shift: torch.Tensor, output_sum: torch.Tensor) -> float:
        """What adding `shift` to every token's output adds to Σ_t ‖o_t − t_t‖², given Σ_t o_t (`output_sum`)."""
        b = shift.double()
        return float(self.tokens * (b @ b) + 2 * b @ output_sum - 2 * b @ self.total)


@dataclass
class NormalEquations:
    """Running sums of one least-squares problem over calibration batches.

    The bias of the sub-layer can be fitted too (the mean of what the scaled units miss): removed units
    took their mean contribution with them, and the bias is the exact place for it, not the scales.
    """

    gram: torch.Tensor  # (units, units): Σ_t u_tj·u_tk
    rhs: torch.Tensor  # (units,): Σ_t u_tj·t_t
    unit_sums: torch.Tensor  # (units, hidden): Σ_t u_tj
    target: TargetSums

    @classmethod
    def empty(cls, units: int, hidden: int) -> NormalEquations:
        zeros = lambda *shape: torch.zeros(*shape, dtype=torch.float64)  # noqa: E731
        return cls(zeros(units, units), zeros(units), zeros(units, hidden), TargetSums.empty(hidden))

    def add_heads(self, contributions: torch.Tensor, target: torch.Tensor) -> None:
        """contributions (tokens, heads, hidden): each head's output; target (tokens, hidden)."""
        u, t = contributions.float(), target.float()
        self.gram += torch.einsum("thd,tkd->hk", u, u).double()
        self.rhs += torch.einsum("thd,td->h", u, t).double()
        self.unit_sums += u.sum(dim=0).double()
        self.target.add(t)

    def add_neurons(
        self,
        activations: torch.Tensor,
        weight: torch.Tensor,
        target: torch.Tensor,
        weight_gram: torch.Tensor | None = None,
    ) -> None:
        """activations (tokens, neurons), weight (hidden, neurons) of the output Linear, target (tokens, hidden).

        u_j = a_j·w_j, so G = (AᵀA) ∘ (WᵀW) and r = Σ_t a_tj (w_j·t_t): no (tokens, neurons, hidden) tensor.
        Per-batch products run in fp32 (a batch sums a few hundred tokens); the running sums are fp64.
        `weight_gram` (WᵀW) can be passed in, as it is the same for every batch.
        """
        a, w, t = activations.float(), weight.float(), target.float()
        w_gram = weight_gram if weight_gram is not None else w.T @ w
        self.gram += ((a.T @ a) * w_gram).double()
        self.rhs += (a * (t @ w)).sum(dim=0).double()
        self.unit_sums += (a.sum(dim=0)[:, None] * w.T).double()
        self.target.add(t)

    def add_target_only(self, target: torch.Tensor) -> None:
        """A sub-layer with no units left: only its bias can be fitted."""
        self.target.add(target.float())

    def error(self, scales: torch.Tensor, bias_shift: torch.Tensor | None = None) -> float:
        """‖Σ_j m_j u_j + Δb − t‖² summed over tokens."""
        m = scales.double()
        value = float(m @ self.gram @ m - 2 * m @ self.rhs) + self.target.squares
        if bias_shift is not None:
            value += self.target.shift_error(bias_shift, self.unit_sums.T @ m)
        return value

    def solve(self, *, ridge: str = "to-one", fit_bias: bool = False, max_scale: float = 10.0) -> Solution:
        """Scales (and, with `fit_bias`, a bias shift) that lower the error, pulled towards 1.

        ridge "to-one" (Kwon et al.): with x = m − 1, minimise ‖G x − c‖² + ‖x‖², c = r − G·1: the normal equations
        solved as a least-squares system with an absolute damping of 1 (LSMR's damp), which leaves directions of G
        with eigenvalues much above 1 fully fitted and those below it untouched. ridge "relative": solve
        (G + δI) m = r + δ·1 with δ = 1e-3 of G's mean diagonal. With the bias free, the scales solve the centred
        system (G − S Sᵀ/T) m = r − S t̄ and the shift is the mean residual. The solution is `ok` when finite,
        within ±max_scale and not worse than no change.
        """
        units = self.rhs.shape[0]
        ones, no_shift = torch.ones(units, dtype=torch.float64), torch.zeros_like(self.target.total)
        tokens = self.target.tokens
        if tokens == 0:
            return Solution(ones, None, True)
        gram, rhs = self.gram, self.rhs
        if fit_bias:
            mean_target = self.target.mean()
            gram = gram - self.unit_sums @ self.unit_sums.T / tokens
            rhs = rhs - self.unit_sums @ mean_target
        scales = ones
        if units and ridge == "to-one":
            values, vectors = torch.linalg.eigh(gram)
            step = vectors.T @ (rhs - gram @ ones)
            scales = ones + vectors @ (values * step / (values**2 + 1.0))
        elif units:
            damping = 1e-3 * float(gram.diagonal().mean().clamp(min=1e-12))
            scales = torch.linalg.solve(gram + damping * torch.eye(units, dtype=torch.float64), rhs + damping * ones)
        shift = mean_target - self.unit_sums.T @ scales / tokens if fit_bias else None
        finite = bool(torch.isfinite(scales).all()) and (units == 0 or float(scales.abs().max()) <= max_scale)
        return Solution(scales, shift, finite and self.error(scales, shift) <= self.error(ones, no_shift))


@dataclass(frozen=True)
class Solution:
    scales: torch.Tensor
    """(units,) float64 multipliers of the kept units' outputs."""
    shift: torch.Tensor | None
    """(hidden,) float64 added to the sub-layer's output bias, or None when the bias was not fitted."""
    ok: bool
    """Finite, within the allowed range and no worse than leaving the units as they are."""
