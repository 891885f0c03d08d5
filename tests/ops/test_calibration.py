import numpy as np
import pytest

from edgec.ops.calibration import (
    RunningStats,
    activation_range,
    entropy_threshold,
    fake_quantize,
    matmul_quantization_error,
)


@pytest.fixture
def heavy_tailed():
    rng = np.random.default_rng(0)
    values = rng.normal(size=200_000).astype(np.float32)
    values[:5] = [60.0, -45.0, 80.0, 55.0, -70.0]  # a few outliers
    return values


def test_minmax_covers_everything(heavy_tailed):
    assert activation_range(heavy_tailed, "minmax") == (pytest.approx(-70.0), pytest.approx(80.0))


def test_percentile_and_entropy_clip_outliers(heavy_tailed):
    for method in ("percentile", "entropy"):
        low, high = activation_range(heavy_tailed, method, percentile=99.99)
        assert -20 < low < -2 and 2 < high < 20, (method, low, high)


def test_ranges_always_include_zero():
    assert activation_range(np.array([2.0, 3.0, 4.0]), "minmax")[0] == 0.0
    assert activation_range(np.array([-2.0, -3.0]), "percentile")[1] == 0.0


def test_entropy_threshold_of_zeros_is_zero():
    assert entropy_threshold(np.zeros(2048, np.int64), 0.0) == 0.0
    assert activation_range(np.zeros(10), "entropy") == (0.0, 0.0)


def test_statistics_accumulated_batch_by_batch_match_the_whole_set(heavy_tailed):
    rows = heavy_tailed.reshape(-1, 8)
    whole, streamed = RunningStats(), RunningStats()
    whole.add(rows)
    for start in range(0, len(rows), 997):  # batches whose maxima grow: the histogram's edge doubles on the way
        streamed.add(rows[start : start + 997])
    assert streamed.range("minmax") == whole.range("minmax") == (pytest.approx(-70.0), pytest.approx(80.0))
    np.testing.assert_array_equal(streamed.channel_absmax, np.abs(rows).max(axis=0))
    assert streamed.positive.sum() + streamed.negative.sum() == rows.size
    width = 2 * streamed.edge / 2048
    for tail in (99.9, 99.99):
        exact = np.quantile(heavy_tailed, [(100 - tail) / 100, tail / 100])
        low, high = streamed.range("percentile", tail)
        assert exact[0] - width <= low <= exact[0] and exact[1] <= high <= exact[1] + width  # one bin, away from zero


def test_the_row_sample_is_bounded_and_drawn_from_every_batch():
    stats = RunningStats(keep=100, seed=0)
    for batch in range(50):
        stats.add(np.full((40, 3), float(batch)))
    assert stats.rows.shape == (100, 3) and stats.rows_seen == 2000
    assert len(np.unique(stats.rows[:, 0])) > 25  # a uniform sample of 2,000 rows, not the first or last batches


def test_fake_quantize_keeps_zero_and_bounds_error():
    x = np.linspace(-1, 3, 1001)
    q = fake_quantize(x, -1.0, 3.0, signed=False)
    assert fake_quantize(np.array([0.0]), -1.0, 3.0, signed=False)[0] == 0.0
    assert np.abs(q - x).max() <= 4.0 / 255 / 2 + 1e-9


def test_clipping_outliers_lowers_matmul_error_for_bulk_activations(heavy_tailed):
    rng = np.random.default_rng(1)
    x = heavy_tailed[: 64 * 32].reshape(64, 32)
    w = rng.normal(size=(32, 16)).astype(np.float32)
    wide = matmul_quantization_error(x[5:], w, activation_range(x, "minmax"), signed=False, per_channel=True)
    tight = matmul_quantization_error(x[5:], w, activation_range(x[5:], "minmax"), signed=False, per_channel=True)
    assert tight < wide
    assert 0 < tight < 0.05
