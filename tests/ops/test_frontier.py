import pytest

from edgec.ops.frontier import fewest_passing


@pytest.mark.parametrize("count", [1, 2, 5, 16, 17, 40])
def test_finds_the_smallest_passing_k_with_each_k_checked_once(count):
    for threshold in range(1, count + 2):
        checked = []

        def passes(k):
            checked.append(k)  # noqa: B023
            return k >= threshold  # noqa: B023

        expected = threshold if threshold <= count else None
        assert fewest_passing(count, passes) == expected
        assert len(checked) == len(set(checked))
        assert len(checked) <= 2 * count.bit_length() + 1


def test_small_answers_are_cheap():
    checked = []
    assert fewest_passing(1000, lambda k: checked.append(k) or True) == 1
    assert checked == [1]
