"""EventBuffer on its own (no NATS): bounds, eviction by severity, outcomes, waiting, waking."""

from __future__ import annotations

from busclient.buffer import Entry, EventBuffer, Outcome
from busclient.events import build_event


def _entry(severity: str, message: str = "m", size: int = 10) -> Entry:
    event = build_event(machine="m", source="s", error_type="t", message=message, severity=severity)
    return Entry(event, "errbus_intake.m.s", b"x" * size, {})


def _messages(buffer: EventBuffer) -> list[str]:
    out = []
    while (head := buffer.next_for_publish()) is not None:
        assert head.event is not None
        out.append(head.event.message)
        buffer.settle(head, Outcome.ACKED)
    return out


def test_full_buffer_evicts_lower_severities_oldest_first_else_drops_the_newcomer() -> None:
    buffer = EventBuffer(max_events=3, max_bytes=1_000)
    info1, info2, error1 = _entry("info", "i1"), _entry("info", "i2"), _entry("error", "e1")
    for entry in (info1, info2, error1):
        assert buffer.offer(entry)[0]
    accepted, dropped, _ = buffer.offer(_entry("critical", "c1"))
    assert accepted and dropped == [info1] and info1.outcome is Outcome.OVERFLOW
    debug = _entry("debug", "d1")
    assert buffer.offer(debug) == (False, [debug], False)  # nothing lower to evict
    assert buffer.offer(_entry("error", "e2"))[1] == [info2]
    late = _entry("error", "e3")
    assert buffer.offer(late)[0] is False and late.outcome is Outcome.OVERFLOW
    stats = buffer.stats(connected=False, reconnects=0)
    assert stats.dropped == {"overflow": 4}
    assert stats.dropped_by_severity == {"info": 2, "debug": 1, "error": 1}
    assert _messages(buffer) == ["e1", "c1", "e2"]  # acceptance order kept


def test_the_head_in_flight_is_never_evicted_and_bytes_are_bounded() -> None:
    buffer = EventBuffer(max_events=10, max_bytes=100)
    head = _entry("info", "head", size=60)
    buffer.offer(head)
    assert buffer.next_for_publish() is head
    assert buffer.offer(_entry("critical", "big", size=50))[0] is False  # head is in flight
    assert buffer.offer(_entry("critical", "too big alone", size=101))[0] is False
    assert buffer.offer(_entry("critical", "fits", size=40))[0] is True
    stats = buffer.stats(connected=True, reconnects=0)
    assert (stats.buffered, stats.buffered_bytes) == (2, 100)


def test_outcomes_waiting_and_waking() -> None:
    buffer = EventBuffer(max_events=10, max_bytes=1_000)
    assert buffer.next_for_publish() is None  # publisher now idle
    first, second = _entry("error", "a"), _entry("error", "b")
    assert buffer.offer(first)[2] is True  # wake the idle publisher once
    assert buffer.offer(second)[2] is False
    flushed = buffer.flushed_future(buffer.last_seq)
    settled = buffer.settled_future(first)
    assert not flushed.done()
    buffer.settle(buffer.next_for_publish(), Outcome.ACKED, duplicate=True)  # type: ignore[arg-type]
    assert settled.result(0) is Outcome.ACKED and not flushed.done()
    buffer.settle(buffer.next_for_publish(), Outcome.REJECTED)  # type: ignore[arg-type]
    assert flushed.result(0) is True and second.outcome is Outcome.REJECTED
    assert second.payload is None  # a settled entry holds no bytes
    buffer.refuse_new()
    closed = _entry("error", "late")
    assert buffer.offer(closed)[0] is False and closed.outcome is Outcome.CLOSED
    stats = buffer.stats(connected=True, reconnects=2)
    assert (stats.submitted, stats.accepted, stats.acked, stats.duplicates) == (3, 2, 1, 1)
    assert stats.dropped == {"rejected": 1, "closed": 1} and stats.reconnects == 2


def test_abandon_all_settles_everything_left() -> None:
    buffer = EventBuffer(max_events=10, max_bytes=1_000)
    entries = [_entry("warning", str(i)) for i in range(3)]
    for entry in entries:
        buffer.offer(entry)
    flushed = buffer.flushed_future(buffer.last_seq)
    assert buffer.abandon_all() == entries
    assert flushed.result(0) is True
    assert all(e.outcome is Outcome.ABANDONED for e in entries)
    assert buffer.stats(connected=False, reconnects=0).buffered == 0
