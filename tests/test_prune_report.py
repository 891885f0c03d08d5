"""The prune-quality benchmark's noise bound on an accuracy drop (benchmarks/prune_report.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import prune_report


def _paired(before: np.ndarray, after: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """(change in points, agreement of the two models' predictions, the exact 95% half-width from the flips)."""
    change = (after == labels).astype(float) - (before == labels)
    return 100 * change.mean(), float((before == after).mean()), 196 * change.std() / len(labels) ** 0.5


def test_the_interval_is_the_paired_one_for_two_classes_and_wider_for_more():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 872)
    before = np.where(rng.random(872) < 0.9, labels, 1 - labels)
    after = np.where(rng.random(872) < 0.05, 1 - before, before)  # 5% of the predictions flip
    change, agreement, exact = _paired(before, after, labels)
    assert prune_report.drop_interval(change, agreement, 872) == pytest.approx(exact)
    # 150 classes: a prediction can change from one wrong class to another, which moves no accuracy, so the
    # interval from the changed predictions is at least the exact one.
    labels = rng.integers(0, 150, 4500)
    before = np.where(rng.random(4500) < 0.8, labels, rng.integers(0, 150, 4500))
    after = np.where(rng.random(4500) < 0.1, rng.integers(0, 150, 4500), before)
    change, agreement, exact = _paired(before, after, labels)
    assert prune_report.drop_interval(change, agreement, 4500) > exact
    assert prune_report.drop_interval(change, None, 4500) is None


def test_a_reported_drop_shows_its_interval_only_where_predictions_were_compared():
    row = {"report": 89.22, "unpruned": {"report": 89.91}, "validation": 94.5}
    assert prune_report._drop(row, "report") == "-0.69"
    row |= {"report_agreement": 0.98, "report_examples": 872}
    assert prune_report._drop(row, "report") == "-0.69 ±0.94"
    assert prune_report._drop(row | {"unpruned": {"validation": 94.65}}, "validation") == "-0.15"


def test_the_draws_summary_averages_each_case_and_fraction_over_its_draws():
    def row(draw: int, validation: float, report: float) -> dict:
        unpruned = {"validation": 94.65, "report": 89.91}
        return {
            "case": "minilm-sst2",
            "study": "draws",
            "fraction": 0.4,
            "variant": f"draw {draw}",
            "validation": validation,
            "report": report,
            "unpruned": unpruned,
        }

    results = {"rows": [row(0, 94.70, 89.11), row(1, 94.65, 89.45), row(2, 94.45, 89.91)]}
    line = prune_report.draws_summary(results)[2]
    # validation drops +0.05, 0.00, -0.20; reported -0.80, -0.46, 0.00: mean -0.42, sample standard deviation 0.40
    assert line == "| minilm-sst2 | 0.4 | 3 | -0.05 (-0.20 / +0.05) | -0.42 (-0.80 / +0.00) | 0.40 |"
