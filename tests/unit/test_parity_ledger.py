"""ParityLedger: matching by msg id, expiry into missing counts, floods, ratio window."""

from __future__ import annotations

from datetime import UTC, datetime

import anyio
import nats.js.errors
import pytest

from bridge.metrics import Metrics
from bridge.parity import ParityLedger, ParityTap
from bridge.pipeline.acks import AckOutcome, AckResult
from bridge.pipeline.dead_letters import dead_letter_key
from bridge.pipeline.publish import Outbound
from contracts.messages import DeadLetter, DeadLetterReason, ErrorEvent, Severity
from tests.support.bridge import make_config
from tests.support.fakes import FakeClock


def _ledger(clock: FakeClock, metrics: Metrics | None = None) -> ParityLedger:
    led = ParityLedger(match_window_secs=10, window_secs=60, clock=clock, metrics=metrics)
    led.zmq_tap_live(0)
    return led


def test_nats_ids_before_the_zmq_tap_is_live_are_not_missing() -> None:
    clock = FakeClock()
    led = ParityLedger(match_window_secs=10, window_secs=60, clock=clock)
    led.saw_nats("early")  # stored before the SUB's subscription reached the publisher
    clock.advance(1)
    led.zmq_tap_live(2.0)
    led.saw_nats("in-flight")  # still inside the warm-up
    clock.advance(2.5)
    led.saw_nats("late")  # after the warm-up: a real miss
    clock.advance(11)
    s = led.stats()
    assert (s.missing_zmq, s.compared) == (1, 1)


def test_clean_run_is_ratio_one_in_either_arrival_order() -> None:
    clock = FakeClock()
    led = _ledger(clock)
    for i in range(50):
        led.saw_zmq(f"a{i}")
        led.saw_nats(f"a{i}")
        led.saw_nats(f"b{i}")
        led.saw_zmq(f"b{i}")
    clock.advance(11)
    s = led.stats()
    assert (s.matched, s.missing_nats, s.missing_zmq, s.ratio, s.pending) == (100, 0, 0, 1.0, 0)


def test_loss_on_each_side_counts_after_the_match_window() -> None:
    clock = FakeClock()
    m = Metrics()
    led = _ledger(clock, m)
    for i in range(10):
        led.saw_zmq(f"z{i}")  # never stored
    for i in range(5):
        led.saw_nats(f"n{i}")  # stored, never seen on ZMQ
    for i in range(85):
        led.saw_zmq(f"ok{i}")
        led.saw_nats(f"ok{i}")
    clock.advance(9)
    assert led.stats().missing_nats == 0  # still inside the match window
    clock.advance(2)
    s = led.stats()
    assert (s.matched, s.missing_nats, s.missing_zmq, s.compared) == (85, 10, 5, 100)
    assert s.ratio == 0.85
    assert m.registry.get_sample_value("busbridge_parity_missing_total", {"side": "nats"}) == 10
    assert m.registry.get_sample_value("busbridge_parity_ratio") == 0.85
    assert m.registry.get_sample_value("busbridge_parity_matched_total") == 85
    led.stats()
    assert m.registry.get_sample_value("busbridge_parity_matched_total") == 85  # counted once


def test_copies_after_a_match_are_ignored() -> None:
    clock = FakeClock()
    led = _ledger(clock)
    led.saw_zmq("e1")
    led.saw_nats("e1")
    led.saw_zmq("e1")  # the PC2 CROSS_MACHINE copy of the same error_id
    led.saw_nats("e1")
    clock.advance(11)
    s = led.stats()
    assert (s.matched, s.missing_nats, s.missing_zmq) == (1, 0, 0)


def test_matched_ids_stay_within_max_matched_ids_and_recent_copies_are_still_ignored() -> None:
    clock = FakeClock()
    led = ParityLedger(10, 60, clock=clock, max_matched_ids=4096)
    led.zmq_tap_live(0)
    ids = [f"e{n}" for n in range(20_000)]
    led.saw_zmq_many((i, "") for i in ids)
    led.saw_nats_many(ids)
    assert len(led._done) == 4096
    led.saw_zmq_many((i, "") for i in ids[-4096:])  # copies of the newest matches
    clock.advance(11)
    s = led.stats()
    assert (s.matched, s.missing_nats, s.missing_zmq) == (20_000, 0, 0)
    assert len(led._done) == 0


def test_flooded_fingerprints_count_as_suppressed_not_missing() -> None:
    clock = FakeClock()
    led = _ledger(clock)
    led.saw_zmq("f1", "fp")
    led.saw_zmq("x1", "other")
    led.flood("fp", ended=False)
    clock.advance(11)
    s = led.stats()
    assert (s.suppressed, s.missing_nats, s.ratio) == (1, 1, 0.0)


def test_a_read_batch_is_observed_at_once_copies_and_dead_letters_included() -> None:
    """``ParityTap.observe`` takes one read batch: every id once (a copy inside the batch is
    ignored), an id JetStream already confirmed is matched, a dead letter is keyed by its
    ``dead_letter_key`` so a dead-letter flood marks it suppressed, not missing."""
    clock = FakeClock()
    cfg = make_config(None, "/tmp")
    ledger = _ledger(clock)
    tap = ParityTap(cfg, ledger, [], None)
    at = datetime(2026, 12, 4, tzinfo=UTC)

    def event(event_id: str) -> ErrorEvent:
        return ErrorEvent(
            event_id=event_id,
            occurred_at=None,
            received_at=at,
            machine="M",
            source="A",
            severity=Severity.ERROR,
            error_type="boom",
            message="it broke",
            fingerprint="fp-a",
        )

    dead = DeadLetter(
        event_id="dl-1",
        received_at=at,
        machine="M",
        reason=DeadLetterReason.INVALID_UTF8,
        frames=[b"\xff\xfe"],
        frame_sizes=[2],
    )
    ledger.saw_nats("e1")  # stored before its ZMQ copy was handed over
    tap.observe([event("e1"), event("e2"), event("e2"), dead, event("e3")])
    assert tap.zmq_seen == 5
    ledger.saw_nats("e2")
    ledger.flood(dead_letter_key(dead, cfg.dead_letters.leading_bytes), ended=False)
    clock.advance(11)
    s = ledger.stats()
    assert (s.matched, s.missing_nats, s.suppressed, s.pending) == (2, 1, 1, 0)


def test_ratio_window_forgets_old_results_and_reset_clears() -> None:
    clock = FakeClock()
    led = _ledger(clock)
    led.saw_zmq("lost")
    clock.advance(11)
    assert led.stats().ratio == 0.0
    clock.advance(61)
    assert led.stats().ratio is None
    led.saw_zmq("p")
    led.reset()
    clock.advance(11)
    assert led.stats().compared == 0
    led.saw_nats("after-reset")  # the tap has to see ZMQ traffic again first
    clock.advance(11)
    assert led.stats().compared == 0


async def test_pubacks_side_confirms_stored_ids_and_reads_samples_back() -> None:
    """``parity.nats_side: pubacks``: stored/duplicate PubAcks of error events and dead letters
    count as seen in JetStream; every n-th stored one is read back by its sequence, and a
    sequence that holds another message or nothing is counted as such."""

    stored = {1: "e1", 2: "e2", 3: "other"}  # seq 3 holds another message, seq 4 nothing

    class FakeJs:
        async def get_msg(self, stream: str, seq: int):
            if seq not in stored:
                raise nats.js.errors.NotFoundError
            return type("Raw", (), {"headers": {"Nats-Msg-Id": stored[seq]}})()

    metrics, clock = Metrics(), FakeClock()
    cfg = make_config(None, "/tmp", parity={"nats_side": "pubacks", "readback_every": 1})
    ledger = _ledger(clock, metrics)
    tap = ParityTap(cfg, ledger, [], FakeJs())
    assert tap.pubacks
    for seq in (1, 2, 3, 4):
        item = Outbound("errbus.error.x", b"{}", {}, "error_event", f"e{seq}")
        ledger.saw_zmq(f"e{seq}")
        tap.confirmed(item, "stored", AckResult(AckOutcome.STORED, seq=seq))
    flood = Outbound("errbus.flood.x", b"{}", {}, "flood_started", "f1")
    tap.confirmed(flood, "stored", AckResult(AckOutcome.STORED, seq=5))  # not compared
    rejected = Outbound("errbus.error.x", b"{}", {}, "error_event", "r1")
    tap.confirmed(rejected, "rejected", AckResult(AckOutcome.ERROR, error_code=10054))
    async with anyio.create_task_group() as tg:
        await tg.start(tap.run)
        with anyio.fail_after(5):
            while sum(_readbacks(metrics).values()) < 4:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    got = _readbacks(metrics)
    assert got == {"ok": 2, "mismatch": 1, "missing": 1}
    clock.advance(11)
    s = ledger.stats()
    assert (s.matched, s.missing_nats, s.missing_zmq, tap.nats_seen) == (4, 0, 0, 4)


@pytest.mark.parametrize("grouped", [False, True])
async def test_readback_with_fast_ingest_batches_samples_the_next_message_with_a_sequence(
    grouped: bool,
) -> None:
    """In batch mode only a batch's last message has a stream sequence: every
    ``readback_every``-th stored message makes the next such one the sample. ``grouped``:
    confirmed as the batch publisher reports them (``confirmed_many``: a flow ack's messages
    together, the one with the sequence alone), else one by one."""
    read: list[int] = []

    class FakeJs:
        async def get_msg(self, stream: str, seq: int):
            read.append(seq)
            return type("Raw", (), {"headers": {"Nats-Msg-Id": f"e{seq}"}})()

    metrics, clock = Metrics(), FakeClock()
    cfg = make_config(None, "/tmp", parity={"nats_side": "pubacks", "readback_every": 25})
    ledger = _ledger(clock, metrics)
    tap = ParityTap(cfg, ledger, [], FakeJs())
    group: list[Outbound] = []
    for n in range(1, 201):  # batches of 10: the 10th, 20th, ... message has its sequence
        item = Outbound("errbus.error.x", b"{}", {}, "error_event", f"e{n}")
        ledger.saw_zmq(f"e{n}")
        ack = AckResult(AckOutcome.STORED, seq=n if n % 10 == 0 else 0)
        if not grouped:
            tap.confirmed(item, "stored", ack)
        elif ack.seq:
            tap.confirmed_many(group, "stored", AckResult(AckOutcome.STORED))
            tap.confirmed_many([item], "stored", ack)
            group = []
        else:
            group.append(item)
    async with anyio.create_task_group() as tg:
        await tg.start(tap.run)
        with anyio.fail_after(5):
            while sum(_readbacks(metrics).values()) < 6:
                await anyio.sleep(0.01)
        await anyio.sleep(0.1)  # nothing more comes
        tg.cancel_scope.cancel()
    assert read == [30, 60, 90, 120, 150, 180]  # due at 25, 50, ...: sampled at the next 10th
    assert _readbacks(metrics) == {"ok": 6, "mismatch": 0, "missing": 0}
    clock.advance(11)
    s = ledger.stats()
    assert (s.matched, s.missing_nats, s.missing_zmq, tap.nats_seen) == (200, 0, 0, 200)


def _readbacks(metrics: Metrics) -> dict[str, float]:
    reg = metrics.registry
    return {
        r: reg.get_sample_value("busbridge_parity_readback_total", {"result": r}) or 0.0
        for r in ("ok", "mismatch", "missing")
    }
