"""The pipeline's memory housekeeping: collections during a build skip the objects older than it, and still free the
cycles its stages leave."""

from __future__ import annotations

import gc
import weakref

import pytest

from edgec.pipeline import collections_skip_older_objects, release_freed_memory


class _Node:
    """An object that can sit in a reference cycle and be watched through a weak reference."""

    other: _Node | None = None


def _cycle() -> weakref.ref[_Node]:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture
def no_freeze():
    gc.unfreeze()  # nothing else in the test process freezes; start from that state whatever ran before
    yield
    gc.unfreeze()


def test_older_objects_are_frozen_during_the_build_and_released_after(no_freeze):
    older = _Node()
    with collections_skip_older_objects():
        assert gc.get_freeze_count() > 0
        assert not any(o is older for o in gc.get_objects()), "objects older than the build are out of the walk"
        watched = _cycle()
        release_freed_memory()
        assert watched() is None, "a cycle the build made is collected"
    assert gc.get_freeze_count() == 0
    assert any(o is older for o in gc.get_objects())


def test_the_freeze_is_lifted_when_the_build_fails(no_freeze):
    with pytest.raises(RuntimeError), collections_skip_older_objects():
        raise RuntimeError("a stage failed")
    assert gc.get_freeze_count() == 0


def test_a_freeze_made_by_someone_else_or_an_outer_build_is_left_alone(no_freeze):
    gc.freeze()
    frozen = gc.get_freeze_count()
    with collections_skip_older_objects():
        younger = _Node()
        assert any(o is younger for o in gc.get_objects()), "the inner build froze nothing more"
    # Frozen objects can still be freed by reference counting (other threads too), so the count may fall a little;
    # unfreezing would drop it to 0, and freezing more would raise it.
    assert 0 < gc.get_freeze_count() <= frozen, "the inner build neither froze more nor unfroze the caller's objects"
