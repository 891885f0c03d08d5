"""The gate: which of a target's thresholds a measurement misses. A NaN never passes.

Every comparison is written as `not (value meets threshold)`, so a NaN metric (a constant output's Spearman, a
cosine of NaN embeddings) fails instead of comparing False against the threshold and slipping through.
"""

from __future__ import annotations

from edgec.recipe import ParityThresholds


def _below(value: float, minimum: float) -> bool:
    return not value >= minimum


def failures(
    result: dict[str, float],
    thresholds: ParityThresholds,
    reference_metric: dict[str, float],
    non_finite: dict[str, int],
) -> tuple[str, ...]:
    """Each threshold the result misses, as a readable phrase; outputs with NaN or inf values fail first."""
    found = [f"output {name} has {count} NaN/inf values" for name, count in sorted(non_finite.items()) if count]
    if (
        thresholds.min_cosine is not None
        and "cosine_mean" in result
        and _below(result["cosine_mean"], thresholds.min_cosine)
    ):
        found.append(f"mean cosine {result['cosine_mean']:.6f} < {thresholds.min_cosine}")
    if (  # a narrower embedding's width-free agreement (ledger.compare_width_free) stands where cosine cannot
        thresholds.min_cosine is not None
        and "similarity_corr_mean" in result
        and _below(result["similarity_corr_mean"], thresholds.min_cosine)
    ):
        found.append(
            f"mean similarity correlation {result['similarity_corr_mean']:.6f} < {thresholds.min_cosine} (min_cosine)"
        )
    if (
        thresholds.min_agreement is not None
        and "agreement" in result
        and _below(result["agreement"], thresholds.min_agreement)
    ):
        found.append(f"top-1 agreement {result['agreement']:.4f} < {thresholds.min_agreement}")
    if thresholds.max_drop is not None:
        for name, value in reference_metric.items():
            drop = value - result[name]
            if not drop <= thresholds.max_drop:
                found.append(
                    f"{name} dropped {drop:.2f} points ({value:.2f} -> {result[name]:.2f}) > {thresholds.max_drop}"
                )
    return tuple(found)
