"""Rounding each layer's kept FFN neurons to a kernel-friendly multiple, within the MAC budget."""

import numpy as np
import pytest

from edgec.ops.mask_selection import round_neurons


def _keep_top(scores: list[np.ndarray], counts: list[int]) -> list[np.ndarray]:
    masks = []
    for s, c in zip(scores, counts):
        mask = np.zeros(len(s), dtype=bool)
        mask[np.argsort(-s, kind="stable")[:c]] = True
        masks.append(mask)
    return masks


@pytest.mark.parametrize("seed", range(5))
def test_counts_become_multiples_within_the_budget_and_keep_the_most_important(seed):
    rng = np.random.default_rng(seed)
    scores = [rng.random(100) for _ in range(6)]
    counts = [int(c) for c in rng.integers(0, 101, size=6)]
    counts[0] = 100  # a whole layer stays whole
    rounded = round_neurons(scores, _keep_top(scores, counts), multiple=16)
    kept = [int(m.sum()) for m in rounded]
    assert all(k % 16 == 0 or k == 100 for k in kept)
    assert sum(kept) <= sum(counts), "never more neurons than the budget allowed"
    assert sum(kept) > sum(counts) - 6 * 16, "rounding moves each layer by less than one block"
    for s, m in zip(scores, rounded):
        assert m.sum() == 0 or m.sum() == len(s) or s[m].min() >= s[~m].max()


def test_the_least_important_block_goes_when_rounding_up_overshoots():
    important, weak = np.linspace(10, 9, 8), np.linspace(1, 0, 8)
    scores = [important, weak]
    rounded = round_neurons(scores, _keep_top(scores, [6, 6]), multiple=4)  # nearest: 8 and 8, but only 12 fit
    assert [int(m.sum()) for m in rounded] == [8, 4]


def test_multiple_one_changes_nothing():
    scores = [np.arange(5.0)]
    keep = _keep_top(scores, [3])
    assert round_neurons(scores, keep, 1) is keep
