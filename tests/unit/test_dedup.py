"""DedupWindow with a fake clock: copies dropped within the window, bounded by count."""

from __future__ import annotations

import pytest

from bridge.pipeline.dedup import DedupWindow
from tests.support.fakes import FakeClock


def test_copies_within_the_window_are_seen() -> None:
    clock = FakeClock()
    window = DedupWindow(10.0, 100, clock)
    assert [window.seen(i) for i in ("a", "b", "a", "b", "c")] == [False, False, True, True, False]


def test_window_expires_from_first_sighting() -> None:
    clock = FakeClock()
    window = DedupWindow(10.0, 100, clock)
    window.seen("a")
    clock.advance(9.99)
    assert window.seen("a")
    clock.advance(0.02)
    assert not window.seen("a") and len(window) == 1


def test_count_bound_forgets_the_oldest() -> None:
    window = DedupWindow(100.0, 2, FakeClock())
    for i in ("a", "b", "c"):
        window.seen(i)
    assert len(window) == 2 and not window.seen("a")


def test_a_full_window_forgets_its_oldest_ids_first_and_expires_by_time() -> None:
    """200k ids at the cap: exactly the newest ``max_ids`` are copies, the first forgotten;
    an id past the window is not a copy, and the window empties as the clock passes it."""
    clock = FakeClock()
    window = DedupWindow(10.0, 200_000, clock)
    ids = [f"{n:032x}" for n in range(400_000)]
    assert not any(window.seen(i) for i in ids)
    assert len(window) == 200_000
    assert all(window.seen(i) for i in ids[-200_000:])
    clock.advance(5.0)
    assert not any(window.seen(i) for i in ids[:1000])  # forgotten: new again
    assert len(window) == 200_000 and window.seen(ids[-1])
    clock.advance(5.0)
    assert not window.seen(ids[-1]) and len(window) == 1000 + 1
    clock.advance(10.0)
    window.seen("late")
    assert len(window) == 1


def test_constructor_guards() -> None:
    with pytest.raises(ValueError):
        DedupWindow(0, 1, FakeClock())
