import numpy as np
import pytest

from edgec.ops import metrics


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
