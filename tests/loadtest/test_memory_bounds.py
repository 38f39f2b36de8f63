"""The bounds the soak investigation added (loadtest/README.md "Soak"), with a fake clock: the
identity table forgets frame hashes idle for a whole window, parity's matched ids are capped
by count as well as by time, and the config carries both the cap and the heap trim interval.
(Their home would be tests/unit/test_identity.py and test_parity_ledger.py.)"""

from __future__ import annotations

from bridge.config.load import parse_config
from bridge.parity import ParityLedger
from bridge.pipeline.identity import EventIdentity, frames_digest
from tests.support.fakes import FakeClock


def test_identity_forgets_hashes_idle_for_a_window_and_keeps_counting_the_rest() -> None:
    clock = FakeClock()
    ident = EventIdentity(window_secs=10.0, max_tracked=1_000, clock=clock)
    for n in range(100):
        ident([b"unique", str(n).encode()], None)
    hot = [b"ERROR:", b"same"]
    assert ident(hot, None).endswith("-1") and len(ident) == 101
    clock.advance(6)
    assert ident(hot, None).endswith("-2")  # seen again within the window: still counting
    clock.advance(6)
    ident([b"new"], None)  # a new hash: the 100 idle for 12 s go, the hot one stays
    assert len(ident) == 2 and ident.evicted_in_window == 0
    assert ident(hot, None) == f"{frames_digest(hot)}-3"


def test_parity_remembers_at_most_max_matched_ids() -> None:
    clock = FakeClock()
    ledger = ParityLedger(match_window_secs=30, window_secs=60, clock=clock, max_matched_ids=50)
    ledger.zmq_tap_live(0)
    for n in range(200):
        ledger.saw_zmq(f"id{n}")
        ledger.saw_nats(f"id{n}")
    ledger.saw_zmq("id199")  # a late copy of one of the last 50 is still ignored
    assert ledger.stats().pending == 0
    ledger.saw_zmq("id0")  # the first ones are forgotten: a copy now waits as a new id
    stats = ledger.stats()
    assert (stats.matched, stats.pending) == (200, 1)


def test_the_new_bounds_are_config_values() -> None:
    cfg = parse_config("parity: {max_matched_ids: 5000}\nmalloc_trim_interval_secs: 0\n")
    assert cfg.parity.max_matched_ids == 5000 and cfg.malloc_trim_interval_secs == 0
    defaults = parse_config("{}")
    assert defaults.parity.max_matched_ids == 100_000
    assert defaults.malloc_trim_interval_secs == 10.0
