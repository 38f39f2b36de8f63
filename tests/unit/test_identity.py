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
