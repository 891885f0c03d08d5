import numpy as np
import pytest

from edgec.parity import metrics


def test_cosine_rows_identity_and_opposite():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert metrics.cosine_rows(a, a) == pytest.approx([1.0, 1.0])
    assert metrics.cosine_rows(a, -a) == pytest.approx([-1.0, -1.0])


def test_pair_spearman_perfect_and_reversed():
    # pair i: (1, 0) and the unit vector at angle 0.3 i, so similarity falls as i grows
    angles = 0.3 * np.arange(5)
    pairs = np.stack([[[1.0, 0.0], [np.cos(a), np.sin(a)]] for a in angles]).reshape(10, 2)
    scores = np.array([5.0, 4, 3, 2, 1])
    assert metrics.pair_spearman(pairs, scores) == pytest.approx(100.0)
    assert metrics.pair_spearman(pairs, -scores) == pytest.approx(-100.0)


def test_agreement_kl_accuracy():
    ref = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    got = np.array([[1.5, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert metrics.top1_agreement(ref, got) == pytest.approx(2 / 3)
    assert metrics.mean_kl(ref, ref) == pytest.approx(0.0, abs=1e-12)
    assert metrics.mean_kl(ref, got) > 0
    assert metrics.accuracy(ref, np.array([0, 1, 1])) == pytest.approx(200 / 3)


def test_masked_agreement_and_errors_ignore_padding():
    ref = np.zeros((1, 3, 2))
    ref[..., 0] = 1
    got = ref.copy()
    got[0, 2] = [0, 5]  # differs only at a padding position
    mask = np.array([[1, 1, 0]])
    assert metrics.top1_agreement(ref, got, mask) == 1.0
    assert metrics.abs_errors(ref, got, mask) == (0.0, 0.0)
    assert metrics.abs_errors(ref, got)[0] == 5.0


def test_span_agreement():
    mask = np.array([[1, 1, 1, 0]])
    start = np.array([[0.0, 3.0, 1.0, 9.0]])  # the padding position must not win
    end = np.array([[0.0, 1.0, 3.0, 9.0]])
    assert metrics.span_agreement(start, end, start, end, mask) == 1.0
    assert metrics.span_agreement(start, end, end, start, mask) == 0.0


def test_error_statistics_hand_computed():
    ref = np.array([1.0, -2.0, 4.0, 0.5])
    got = np.array([1.5, -2.0, 3.0, 0.0])  # abs errors 0.5, 0, 1, 0.5; rel errors 0.5, 0, 0.25, 1
    stats = metrics.error_statistics(ref, got, quantile=0.5)
    assert set(stats) == {"max_abs", "mean_abs", "median_abs", "max_rel", "mean_rel", "median_rel", "q_abs"}
    assert stats["max_abs"] == pytest.approx(1.0)
    assert stats["mean_abs"] == pytest.approx(0.5)
    assert stats["median_abs"] == pytest.approx(0.5)
    assert stats["max_rel"] == pytest.approx(1.0)
    assert stats["mean_rel"] == pytest.approx(1.75 / 4)
    assert stats["median_rel"] == pytest.approx(0.375)
    assert stats["q_abs"] == pytest.approx(0.5)
    assert all(isinstance(v, float) for v in stats.values())


def test_error_statistics_identical_arrays_are_all_zero():
    ref = np.array([[0.0, 1.0], [-3.0, 2.5]], dtype=np.float32)
    assert all(v == 0.0 for v in metrics.error_statistics(ref, ref.copy()).values())


def test_error_statistics_zero_reference_gives_finite_relative_error():
    stats = metrics.error_statistics(np.array([0.0, 1.0]), np.array([1e-6, 1.0]))
    assert stats["max_rel"] == pytest.approx(1e-6 / 1e-12)
    assert np.isfinite(stats["mean_rel"])


def test_error_statistics_outlier_moves_max_not_median():
    ref = np.ones(101)
    got = ref + 0.01
    base = metrics.error_statistics(ref, got)
    got[50] = 11.0
    spiked = metrics.error_statistics(ref, got)
    assert spiked["max_abs"] == pytest.approx(10.0)
    assert spiked["max_rel"] == pytest.approx(10.0)
    assert spiked["median_abs"] == pytest.approx(base["median_abs"]) == pytest.approx(0.01)
    assert spiked["median_rel"] == pytest.approx(base["median_rel"])
    assert spiked["q_abs"] == pytest.approx(0.01)  # one outlier in 101 sits above the 0.99 quantile
