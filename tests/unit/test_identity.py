"""EventIdentity: legacy ids kept, repeats numbered, windows and LRU with a fake clock."""

from __future__ import annotations

import pytest

from bridge.pipeline.identity import EventIdentity, frames_digest
from tests.support.fakes import FakeClock


def _identity(clock: FakeClock, window: float = 10.0, max_tracked: int = 100) -> EventIdentity:
    return EventIdentity(window, max_tracked, clock)


def test_legacy_error_id_is_the_msg_id() -> None:
    ident = _identity(FakeClock())
    assert (
        ident([b"a"], "fb685d84-d253-40a5-bf94-f8fd71b35dfe")
        == "fb685d84-d253-40a5-bf94-f8fd71b35dfe"
    )
    assert (
        ident([b"b"], "fb685d84-d253-40a5-bf94-f8fd71b35dfe")
        == "fb685d84-d253-40a5-bf94-f8fd71b35dfe"
    )


def test_legacy_id_is_made_header_safe() -> None:
    assert _identity(FakeClock())([b"a"], "a b\r\nc") == "a_b__c"


def test_identical_frames_get_increasing_occurrences() -> None:
    ident = _identity(FakeClock())
    ids = [ident([b"ERROR:", b"{}"], None) for _ in range(3)]
    digest = frames_digest([b"ERROR:", b"{}"])
    assert ids == [f"{digest}-1", f"{digest}-2", f"{digest}-3"]


def test_frame_boundaries_matter() -> None:
    assert frames_digest([b"ERROR:", b"{}"]) != frames_digest([b"ERROR:{}"])


def test_counter_resets_only_after_a_quiet_window() -> None:
    clock = FakeClock()
    ident = _identity(clock, window=10.0)
    assert ident([b"x"], None).endswith("-1")
    clock.advance(9.9)
    assert ident([b"x"], None).endswith("-2")  # window is anchored at the last occurrence
    clock.advance(9.9)
    assert ident([b"x"], None).endswith("-3")
    clock.advance(10.0)
    assert ident([b"x"], None).endswith("-1")


def test_two_bridges_compute_the_same_ids() -> None:
    a, b = _identity(FakeClock()), _identity(FakeClock(5.0))
    frames = [[b"ERROR:x:y:boom"], [b"ERROR:x:y:boom"], [b"{}"]]
    assert [a(f, None) for f in frames] == [b(f, None) for f in frames]


def test_lru_eviction_counts_a_duplicate_risk_within_the_window() -> None:
    clock = FakeClock()
    ident = _identity(clock, window=10.0, max_tracked=2)
    for frame in (b"a", b"b", b"c"):
        ident([frame], None)
    assert ident.evicted_in_window == 1
    clock.advance(20.0)
    ident([b"d"], None)
    assert ident.evicted_in_window == 1  # "b" was idle past the window: no risk


def test_constructor_guards() -> None:
    with pytest.raises(ValueError):
        EventIdentity(0, 10, FakeClock())


def test_two_tables_passing_their_changes_at_each_turn_count_as_one_table() -> None:
    """``take_changes``/``apply``: two sides that take turns (the decode worker and the bridge)
    give every repeat the id one table would give it; the LRU order follows last seen."""
    clock = FakeClock()
    one, left, right = _identity(clock), _identity(clock), _identity(clock)
    left.track_changes()
    right.track_changes()
    frames = [[b"ERROR:", b"a"], [b"ERROR:", b"b"], [b"ERROR:", b"a"]]
    want, got = [], []
    for turn in range(6):
        side, other = (left, right) if turn % 2 else (right, left)
        for f in frames[: turn % 3 + 1]:
            clock.advance(1.0)
            want.append(one(f, None))
            got.append(side(f, None))
        other.apply(side.take_changes())
    assert got == want
    assert left.take_changes() == right.take_changes() == []  # apply is not a change
    assert left.snapshot() == right.snapshot() == one.snapshot()


def test_a_snapshot_lets_an_empty_table_go_on_counting() -> None:
    clock = FakeClock()
    old = _identity(clock)
    ids = [old([b"x"], None) for _ in range(3)]
    fresh = _identity(clock)
    fresh.apply(old.snapshot())
    assert fresh([b"x"], None) == ids[0][:-1] + "4"
    assert old.take_changes() == []  # not tracked: nothing remembered


def test_applied_entries_beyond_max_tracked_are_forgotten_without_counting_evictions() -> None:
    clock = FakeClock()
    small = _identity(clock, max_tracked=2)
    small.apply([(f"h{i}", clock(), 1) for i in range(5)])
    assert [key for key, _, _ in small.snapshot()] == ["h3", "h4"]
    assert small.evicted_in_window == 0


def test_changes_nobody_takes_stay_bounded_and_then_come_as_the_whole_table() -> None:
    """The bridge counts on its own for as long as traffic stays steady (the decode worker
    idle): what it remembers as changed stays within ``max_tracked``."""
    clock = FakeClock()
    ident = _identity(clock, max_tracked=3)
    ident.track_changes()
    for i in range(10):
        clock.advance(0.1)
        ident([f"frame {i}".encode()], None)
        assert len(ident._changed or {}) <= 3
    assert ident.take_changes() == ident.snapshot() != []
    assert ident.take_changes() == []
