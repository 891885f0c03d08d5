"""Searches over monotone predicates (pure: the caller supplies the expensive check)."""

from __future__ import annotations

from collections.abc import Callable


def fewest_passing(count: int, passes: Callable[[int], bool]) -> int | None:
    """The smallest k in 1..count with passes(k), assuming passes is monotone (false ... false true ... true).

    k grows 1, 2, 4 ... until a pass (so a small answer costs few checks), then a binary search between the
    last failure and the first pass. None when even k = count fails. Each k is checked at most once.
    """
    failing, k = 0, 1
    while k <= count:
        if passes(k):
            break
        failing, k = k, (count if k < count and 2 * k > count else 2 * k)
    else:
        return None
    passing = k
    while passing - failing > 1:
        middle = (failing + passing) // 2
        failing, passing = (failing, middle) if passes(middle) else (middle, passing)
    return passing


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """Which (cost, value) points no other point beats: none has lower-or-equal cost and higher-or-equal value
    with one of the two strictly better. Lower cost and higher value are better (latency vs accuracy)."""
    return [not any(c <= cost and v >= value and (c < cost or v > value) for c, v in points) for cost, value in points]
