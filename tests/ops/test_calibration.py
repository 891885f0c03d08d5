import numpy as np
import pytest

from edgec.ops.calibration import activation_range, entropy_threshold, fake_quantize, matmul_quantization_error


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
    assert entropy_threshold(np.zeros(10)) == 0.0


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
