"""DeadLetterGate: the first N dead letters of a key per window pass, the rest are counted in
summaries; every suppressed one is counted exactly once; keys stay apart; flush reports all."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from bridge.pipeline.dead_letters import SAMPLE_FRAME_BYTES, DeadLetterGate, dead_letter_key
from contracts.codec import decode, encode
from contracts.messages import DeadLetter, DeadLetterReason, Dialect
from tests.support.fakes import FakeClock

NOW = datetime(2026, 12, 3, tzinfo=UTC)


def _dl(
    frame: bytes, reason: DeadLetterReason = DeadLetterReason.INVALID_UTF8, n: int = 0
) -> DeadLetter:
    return DeadLetter(
        event_id=f"dl-{n}",
        received_at=NOW,
        machine="M",
        reason=reason,
        frames=[frame],
        frame_sizes=[len(frame)],
        dialect_guess=None,
    )


def _gate(clock: FakeClock, **kw) -> DeadLetterGate:
    settings = {
        "threshold": 3,
        "window_secs": 10.0,
        "summary_interval_secs": 2.0,
        "max_keys": 100,
        "aggregate_threshold": 1000,
    }
    settings.update(kw)
    return DeadLetterGate(
        machine="M", leading_bytes=4, clock=clock, wall_clock=lambda: NOW, **settings
    )


def test_key_is_reason_guess_and_leading_bytes() -> None:
    dl = _dl(b"\xff\xfe garbage")
    assert dead_letter_key(dl, 4) == "invalid_utf8|-|fffe2067"
    guessed = msgspec.structs.replace(dl, dialect_guess=Dialect.PC2_TOPIC)
    assert dead_letter_key(guessed, 2) == "invalid_utf8|pc2_topic|fffe"


def test_storm_passes_threshold_per_window_and_counts_the_rest_exactly() -> None:
    clock = FakeClock()
    gate = _gate(clock)
    passed = [gate.check(_dl(b"\xff\xfe garbage %d" % n, n=n)) for n in range(1000)]
    assert sum(passed) == 3 and passed[:3] == [True] * 3
    clock.advance(2.0)
    first = gate.tick()
    assert [s.suppressed for s in first] == [997] and not first[0].ended
    assert first[0].suppressed_total == 997 and first[0].key == "invalid_utf8|-|fffe2067"
    clock.advance(10.0)  # a new window: 3 pass again, the rest counted
    passed = [gate.check(_dl(b"\xff\xfe garbage again %d" % n, n=n)) for n in range(10)]
    assert sum(passed) == 3
    clock.advance(10.0)  # quiet for a whole window: the storm's last summary
    last = gate.tick()
    assert [(s.suppressed, s.suppressed_total, s.ended) for s in last] == [(7, 1004, True)]
    assert gate.suppressing == 0 and gate.tick() == []


def test_keys_stay_apart_and_flush_reports_everything_once() -> None:
    clock = FakeClock()
    gate = _gate(clock)
    patterns = [b"\xff\xfeAAAA", b"\x00\x01BBBB", b"{not json"]
    counts = dict.fromkeys(patterns, 0)
    for n in range(300):
        p = patterns[n % 3]
        if not gate.check(_dl(p + b"%d" % n, n=n)):
            counts[p] += 1
    assert sum(counts.values()) == 300 - 9
    summaries = gate.flush()
    assert len(summaries) == 3 and all(s.ended for s in summaries)
    assert sum(s.suppressed for s in summaries) == 291
    assert gate.flush() == []


def test_evicted_key_is_summarised_first() -> None:
    clock = FakeClock()
    gate = _gate(clock, threshold=0, max_keys=2)
    for head in (b"AAAA", b"BBBB", b"CCCC"):
        assert not gate.check(_dl(head + b"x"))
    out = gate.tick() + gate.flush()
    assert sorted(s.key.rsplit("|", 1)[1] for s in out) == [
        b.hex() for b in (b"AAAA", b"BBBB", b"CCCC")
    ]
    assert sum(s.suppressed for s in out) == 3


def test_summary_sample_is_cut_and_round_trips() -> None:
    clock = FakeClock()
    gate = _gate(clock, threshold=0)
    big = b"\xff" * (SAMPLE_FRAME_BYTES * 4)
    assert not gate.check(_dl(big))
    [summary] = gate.flush()
    assert len(summary.sample.frames[0]) == SAMPLE_FRAME_BYTES
    assert summary.sample.truncated is not None and summary.sample.frame_sizes == [len(big)]
    assert decode(encode(summary)) == summary


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        _gate(FakeClock(), threshold=-1)
    with pytest.raises(ValueError):
        _gate(FakeClock(), max_keys=0)


def test_varying_leading_bytes_are_capped_per_reason() -> None:
    """A constant 2-byte header then random bytes: a new key per frame, caught by the
    per-reason aggregate key; still every suppressed one counted once."""
    import random

    clock = FakeClock()
    gate = _gate(clock, aggregate_threshold=50)
    rng = random.Random(1)
    passed = sum(gate.check(_dl(b"\xff\xfe" + rng.randbytes(30), n=n)) for n in range(5000))
    assert passed == 50
    summaries = gate.flush()
    assert sum(s.suppressed for s in summaries) == 5000 - 50
    assert {s.key for s in summaries} == {"invalid_utf8|-|*"}
    assert summaries[0].leading_bytes == b"" and summaries[0].threshold == 50
