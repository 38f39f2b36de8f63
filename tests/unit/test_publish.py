"""PipelinedPublisher against a fake transport: window, acks, retries, order, drain."""

from __future__ import annotations

import random

import anyio
import anyio.lowlevel
import pytest

from bridge.metrics import Metrics
from bridge.pipeline.acks import AckOutcome, AckResult
from bridge.pipeline.publish import Outbound, PipelinedPublisher
from tests.support.fakes import FakeClock, FakeTransport

STORED = AckResult(AckOutcome.STORED, seq=1)
NO_RESPONDERS = AckResult(AckOutcome.NO_RESPONDERS, error_code=503)


def _item(n: int) -> Outbound:
    return Outbound(
        f"errbus.error.m.error.s{n}",
        b"x%d" % n,
        {"Nats-Msg-Id": f"id-{n}"},
        "error_event",
        f"id-{n}",
    )


def _publisher(transport: FakeTransport, clock: FakeClock, done: list, **kw) -> PipelinedPublisher:
    opts = {
        "max_in_flight": 4,
        "ack_timeout_secs": 1.0,
        "max_pending": 10,
        "retry_initial_secs": 0.01,
        "retry_max_secs": 0.02,
    }
    opts.update(kw)
    return PipelinedPublisher(
        transport,
        "_INBOX.t",
        Metrics(),
        clock=clock,
        rng=random.Random(1),
        on_done=lambda i, o, a: done.append((i.msg_id, o)),
        **opts,
    )


async def _settle() -> None:
    for _ in range(20):
        await anyio.lowlevel.checkpoint()


async def _run(pub: PipelinedPublisher, body) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(pub._send_loop)
        await _settle()
        await body()
        tg.cancel_scope.cancel()


async def test_window_bounds_in_flight_and_acks_free_slots() -> None:
    t, clock, done = FakeTransport(), FakeClock(), []
    pub = _publisher(t, clock, done)
    for n in range(6):
        assert pub.submit(_item(n))

    async def body() -> None:
        assert len(t.sent) == 4 and pub.in_flight == 4
        pub.on_ack(t.token(0), STORED)
        await _settle()
        assert len(t.sent) == 5

    await _run(pub, body)
    assert done == [("id-0", "stored")]


async def test_submit_refuses_beyond_max_pending() -> None:
    pub = _publisher(FakeTransport(), FakeClock(), [], max_pending=3)
    assert [pub.submit(_item(n)) for n in range(4)] == [True, True, True, False]


async def test_ack_timeout_retries_with_the_same_msg_id() -> None:
    t, clock, done = FakeTransport(), FakeClock(), []
    pub = _publisher(t, clock, done)
    pub.submit(_item(1))

    async def body() -> None:
        clock.advance(1.5)
        assert pub.expire_overdue() == 1
        clock.advance(1.0)  # past the backoff hold
        pub._wake.set()
        await _settle()
        assert [s[3]["Nats-Msg-Id"] for s in t.sent] == ["id-1", "id-1"]
        pub.on_ack(t.token(0), STORED)  # late ack of the first attempt: ignored
        pub.on_ack(t.token(1), AckResult(AckOutcome.DUPLICATE))

    await _run(pub, body)
    assert done == [("id-1", "duplicate")] and pub.late_acks == 1


async def test_no_responders_holds_then_resends_in_submit_order() -> None:
    t, clock, done = FakeTransport(), FakeClock(), []
    pub = _publisher(t, clock, done, max_in_flight=8)
    for n in range(3):
        pub.submit(_item(n))

    async def body() -> None:
        for i in (2, 0, 1):  # failures arrive out of order
            pub.on_ack(t.token(i), NO_RESPONDERS)
        pub.submit(_item(3))
        await _settle()
        assert len(t.sent) == 3  # held: nothing sent during the backoff
        clock.advance(1.0)
        pub._wake.set()
        await _settle()
        assert [s[3]["Nats-Msg-Id"] for s in t.sent[3:]] == ["id-0"]  # probe first
        pub.on_ack(t.token(3), STORED)
        await _settle()
        assert [s[3]["Nats-Msg-Id"] for s in t.sent[4:]] == ["id-1", "id-2", "id-3"]

    await _run(pub, body)


async def test_not_connected_is_retried() -> None:
    t, clock, done = FakeTransport(), FakeClock(), []
    t.connected = False
    pub = _publisher(t, clock, done)
    pub.submit(_item(7))

    async def body() -> None:
        assert pub.backlog == 1 and not t.sent
        t.connected = True
        clock.advance(1.0)
        pub._wake.set()
        await _settle()
        assert len(t.sent) == 1
        pub.on_ack(t.token(0), STORED)

    await _run(pub, body)
    assert done == [("id-7", "stored")]


async def test_refused_by_the_client_is_given_up_at_once_without_crashing() -> None:
    t, clock, done = FakeTransport(), FakeClock(), []
    t.refuse = {"id-1"}
    pub = _publisher(t, clock, done)
    pub.submit(_item(1))
    pub.submit(_item(2))

    async def body() -> None:
        assert [s[3]["Nats-Msg-Id"] for s in t.sent] == ["id-2"]
        pub.on_ack(t.token(0), STORED)

    await _run(pub, body)
    assert done == [("id-1", "rejected"), ("id-2", "stored")]


async def test_unknown_jetstream_errors_are_transient() -> None:
    t, clock, done = FakeTransport(), FakeClock(), []
    pub = _publisher(t, clock, done, max_rejections=1)
    pub.submit(_item(1))
    full = AckResult(
        AckOutcome.ERROR, error_code=10047, description="insufficient storage resources"
    )

    async def body() -> None:
        for attempt in range(3):
            pub.on_ack(t.token(attempt), full)
            clock.advance(10.0)
            pub._wake.set()
            await _settle()
        assert len(t.sent) == 4 and not done  # still retrying, never given up

    await _run(pub, body)


async def test_permanent_rejection_gives_up_after_max_rejections() -> None:
    t, clock, done = FakeTransport(), FakeClock(), []
    pub = _publisher(t, clock, done, max_rejections=2)
    pub.submit(_item(1))
    bad = AckResult(
        AckOutcome.ERROR, error_code=10054, description="message size exceeds maximum allowed"
    )

    async def body() -> None:
        pub.on_ack(t.token(0), bad)
        clock.advance(1.0)
        pub._wake.set()
        await _settle()
        pub.on_ack(t.token(1), bad)

    await _run(pub, body)
    assert done == [("id-1", "rejected")] and pub.backlog == 0


async def test_abandon_reports_what_is_left() -> None:
    t, clock, done = FakeTransport(), FakeClock(), []
    pub = _publisher(t, clock, done)
    pub.submit(_item(1))
    pub.submit(_item(2))
    assert pub.backlog == 2
    assert pub.abandon_all() == 2 and pub.backlog == 0
    assert sorted(done) == [("id-1", "abandoned"), ("id-2", "abandoned")]


def test_constructor_guards_invariants() -> None:
    with pytest.raises(ValueError):
        PipelinedPublisher(FakeTransport(), "_INBOX.x", Metrics(), max_in_flight=0)


async def test_backoff_grows_per_round_not_per_message_and_resume_ends_it() -> None:
    t, clock, done = FakeTransport(), FakeClock(), []
    pub = _publisher(t, clock, done, max_in_flight=8, retry_initial_secs=1.0, retry_max_secs=60.0)
    for n in range(5):
        pub.submit(_item(n))

    async def body() -> None:
        for i in range(5):  # one round: five failures, one backoff step
            pub.on_ack(t.token(i), NO_RESPONDERS)
        assert pub._failures_in_row == 1 and pub._hold_until - clock.now <= 1.0
        pub.resume()  # NATS reconnected
        await _settle()
        assert [s[3]["Nats-Msg-Id"] for s in t.sent[5:]] == ["id-0"]  # a probe, alone
        pub.on_ack(t.token(5), STORED)
        await _settle()
        assert [s[3]["Nats-Msg-Id"] for s in t.sent[6:]] == [f"id-{n}" for n in range(1, 5)]

    await _run(pub, body)


async def test_connection_lost_retries_everything_in_flight_in_order_behind_a_probe() -> None:
    t, clock, done = FakeTransport(), FakeClock(), []
    pub = _publisher(t, clock, done, max_in_flight=8)
    for n in range(3):
        pub.submit(_item(n))

    async def body() -> None:
        assert pub.in_flight == 3
        pub.connection_lost()
        pub.submit(_item(3))
        clock.advance(1.0)
        pub.resume()
        await _settle()
        assert [s[3]["Nats-Msg-Id"] for s in t.sent[3:]] == ["id-0"]  # the probe, alone
        pub.on_ack(t.token(1), STORED)  # a late ack of a pre-disconnect attempt is ignored
        pub.on_ack(t.token(3), STORED)
        await _settle()
        assert [s[3]["Nats-Msg-Id"] for s in t.sent[4:]] == ["id-1", "id-2", "id-3"]

    await _run(pub, body)
