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


def test_constructor_guards() -> None:
    with pytest.raises(ValueError):
        DedupWindow(0, 1, FakeClock())
