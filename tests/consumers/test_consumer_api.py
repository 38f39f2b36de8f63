"""``consumers.bus`` against a real nats-server: filters, bounded redelivery and the consumer
dead letter, restart, work sharing, fan-out, unknown and newer contracts, the async iterator,
the sync facade, and the two give-up paths (never acknowledged, server advisory)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import nats
import pytest
from prometheus_client import CollectorRegistry

from bridge.adapters.nats_server import NatsServerProcess
from bridge.config.load import parse_config
from consumers.bus import (
    ConsumerDeadLetter,
    ConsumerError,
    ConsumerMetrics,
    DeadLetterCause,
    DeliveryInfo,
    ErrorBusConsumer,
    RawMessage,
    Subscription,
    decode_dead_letter,
)
from contracts import (
    BridgeHeartbeat,
    DeadLetter,
    DeadLetterReason,
    ErrorEvent,
    FloodStarted,
    HealthStatus,
    Severity,
    encode,
)
from contracts.subjects import HEADER_CONTRACT, HEADER_MSG_ID
from tests.consumers.conftest import (
    PATIENCE_SECS,
    T0,
    Bus,
    consumer_threads,
    event,
    provision,
    until,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

FAST = {"backoff_secs": (0.05, 0.1), "fetch_timeout_secs": 0.5}


@asynccontextmanager
async def running(consumer: ErrorBusConsumer, handler: Any) -> AsyncIterator[ErrorBusConsumer]:
    """``consumer`` running ``handler`` in a task; stopped (and the task awaited) on exit."""
    async with consumer:
        task = asyncio.create_task(consumer.run(handler))
        try:
            yield consumer
        finally:
            consumer.stop()
            await task


def collector(into: list) -> Any:
    async def handle(item: Any, info: DeliveryInfo) -> None:
        into.append(item)

    return handle


def _ids(items: list) -> list[str]:
    return [item.event_id for item in items]


def _dead_letter(machine: str, n: int) -> DeadLetter:
    return DeadLetter(
        event_id=f"dl-{machine}-{n}",
        received_at=T0,
        machine=machine,
        reason=DeadLetterReason.INVALID_JSON,
        frames=[b"ERROR:{x"],
        frame_sizes=[8],
    )


def _flood(n: int, severity: Severity) -> FloodStarted:
    return FloodStarted(
        event_id=f"fl-{n}",
        machine="PC2",
        fingerprint="fp",
        source="Translator",
        error_type="TimeoutError",
        rule="timeouts",
        severity=severity,
        threshold=5,
        window_secs=30.0,
        started_at=T0,
        sample=event(n, "PC2", severity, "Translator"),
    )


async def _consume_until_drained(bus: Bus, sub: Subscription) -> tuple[list, Any]:
    got: list = []
    async with running(ErrorBusConsumer(sub, nc=bus.nc), collector(got)) as c:
        await until(lambda: bus.drained(sub.durable), f"{sub.durable} drained")
    return got, c.stats


# --- selection ------------------------------------------------------------------------


async def test_filters_select_by_machine_severity_source_and_type(bus: Bus) -> None:
    stored = [
        event(0, "MainPC", Severity.ERROR, "AgentA"),
        event(1, "PC2", Severity.ERROR, "Translator"),
        event(2, "PC2", Severity.CRITICAL, "Translator"),
        event(3, "PC2", Severity.WARNING, "Translator"),
        event(4, "PC2", Severity.ERROR, "Other"),
        event(5, "MainPC", Severity.CRITICAL, "Translator"),
        _dead_letter("PC2", 1),
        _dead_letter("MainPC", 2),
        _flood(6, Severity.WARNING),
        _flood(7, Severity.CRITICAL),
        BridgeHeartbeat(
            event_id="hb-1", bridge_id="b", machine="PC2", sent_at=T0, status=HealthStatus.HEALTHY
        ),
    ]
    for msg in stored:
        await bus.publish(msg)
    selections = {
        "pc2-translator": (
            Subscription(
                durable="pc2-translator",
                machines=("PC2",),
                sources=("Translator",),
                min_severity=Severity.ERROR,
                types=("error_event", "flood_started"),
            ),
            ["ev-1", "ev-2", "fl-7"],
        ),
        "pc2-bridge": (
            Subscription(
                durable="pc2-bridge", machines=("PC2",), types=("dead_letter", "bridge_heartbeat")
            ),
            ["dl-PC2-1", "hb-1"],
        ),
        "everything": (Subscription(durable="everything"), [m.event_id for m in stored]),
    }
    stats = {}
    for name, (sub, expected) in selections.items():
        got, stats[name] = await _consume_until_drained(bus, sub)
        assert _ids(got) == expected, name
    # the flood warning passed the server's subject filter; its severity left it out here
    assert stats["pc2-translator"].skipped_by["filtered"] == 1
    assert stats["everything"].skipped == 0
    info = await bus.js.consumer_info("ERRBUS", "pc2-translator")
    assert sorted(info.config.filter_subjects or [info.config.filter_subject]) == [
        "errbus.error.PC2.critical.Translator",
        "errbus.error.PC2.error.Translator",
        "errbus.flood.PC2.Translator",
    ]


async def test_flood_severity_filtered_by_the_consumer(bus: Bus) -> None:
    await bus.publish(_flood(1, Severity.WARNING))
    await bus.publish(_flood(2, Severity.CRITICAL))
    sub = Subscription(durable="floods", types=("flood_started",), min_severity=Severity.ERROR)
    got: list = []
    async with running(ErrorBusConsumer(sub, nc=bus.nc), collector(got)) as c:
        await until(lambda: bus.drained("floods"), "drained")
    assert _ids(got) == ["fl-2"]
    assert c.stats.skipped_by["filtered"] == 1 and c.stats.processed == 1


# --- bounded redelivery and the dead letter ---------------------------------------------


async def test_poison_message_is_dead_lettered_after_max_deliver_and_the_rest_flows(
    bus: Bus,
) -> None:
    seqs = {f"ev-{n}": await bus.publish(event(n)) for n in range(10)}
    attempts: Counter[str] = Counter()
    deliveries_seen: list[int] = []

    async def handler(item: ErrorEvent, info: DeliveryInfo) -> None:
        attempts[item.event_id] += 1
        if item.event_id == "ev-4":
            deliveries_seen.append(info.num_delivered)
            raise ValueError("cannot digest ev-4")

    registry = CollectorRegistry()
    sub = Subscription(durable="poison", max_deliver=3, **FAST)
    consumer = ErrorBusConsumer(sub, nc=bus.nc, metrics=ConsumerMetrics(registry))
    async with running(consumer, handler) as c:
        await until(lambda: c.stats.dead_lettered == 1, "the dead letter")
        await until(lambda: bus.drained("poison"), "drained")

    assert attempts["ev-4"] == 3 and deliveries_seen == [1, 2, 3]
    assert all(attempts[f"ev-{n}"] == 1 for n in range(10) if n != 4)
    s = c.stats
    assert (s.processed, s.failed, s.redelivered, s.dead_lettered) == (9, 3, 2, 1)
    assert s.delivered == 12 and s.skipped == 0  # its own dead letter is never read back
    sample = registry.get_sample_value
    labels = {"durable": "poison", "outcome": "dead_lettered"}
    assert sample("busbridge_consumer_messages_total", labels) == 1

    [stored] = await bus.stored("errbus.consumer_dlq.>")
    assert stored.subject == "errbus.consumer_dlq.poison"
    assert stored.headers[HEADER_MSG_ID] == f"poison:{seqs['ev-4']}"
    assert stored.headers[HEADER_CONTRACT] == "consumer_dead_letter"
    record = decode_dead_letter(stored.data)
    [original] = [
        m for m in await bus.stored("errbus.error.>") if m.metadata.sequence.stream == seqs["ev-4"]
    ]
    assert record.cause is DeadLetterCause.HANDLER_FAILED
    assert (record.error_type, record.error_message) == ("ValueError", "cannot digest ev-4")
    assert "cannot digest ev-4" in record.error_traceback
    assert (record.durable, record.stream, record.stream_seq) == ("poison", "ERRBUS", seqs["ev-4"])
    assert record.subject == original.subject and record.deliveries == 3
    assert record.payload == original.data and not record.payload_truncated
    assert record.payload_bytes == len(original.data)
    assert record.contract == "error_event" and record.headers[HEADER_MSG_ID] == "ev-4"

    # a reader of the consumer dead letters gets the record typed
    readers: list = []
    reader = Subscription(
        durable="dlq-reader", types=("consumer_dead_letter",), dead_letters_of=("poison",)
    )
    async with running(ErrorBusConsumer(reader, nc=bus.nc), collector(readers)):
        await until(lambda: bus.drained("dlq-reader"), "dlq reader drained")
    assert [type(r) for r in readers] == [ConsumerDeadLetter]
    assert readers[0].stream_seq == seqs["ev-4"]


async def test_a_sync_handler_failing_is_retried_in_its_worker_thread(bus: Bus) -> None:
    await bus.publish(event(1))
    threads: list[str] = []

    def handler(item: ErrorEvent, info: DeliveryInfo) -> None:
        threads.append(threading.current_thread().name)
        if info.num_delivered < 2:
            raise OSError("flaky disk")

    sub = Subscription(durable="flaky", max_deliver=3, **FAST)
    async with running(ErrorBusConsumer(sub, nc=bus.nc), handler) as c:
        await until(lambda: c.stats.processed == 1, "processed")
    assert len(threads) == 2 and threading.main_thread().name not in threads
    assert (c.stats.failed, c.stats.redelivered, c.stats.dead_lettered) == (1, 1, 0)


async def test_a_delivery_never_acknowledged_is_dead_lettered_without_the_handler(
    bus: Bus,
) -> None:
    """A consumer that dies with the message (here: a raw puller that never acks) uses up
    the attempts; the next delivery goes to the dead letter, not to the handler again."""
    poison_seq = await bus.publish(event(1))
    sub = Subscription(durable="crashy", max_deliver=2, ack_wait_secs=0.5, **FAST)
    handled: list = []
    async with ErrorBusConsumer(sub, nc=bus.nc):  # creates the durable
        pass
    nc = await nats.connect(bus.url)
    try:
        puller = await nc.jetstream().pull_subscribe_bind(durable="crashy", stream="ERRBUS")
        for attempt in (1, 2):
            [msg] = await puller.fetch(1, timeout=PATIENCE_SECS)
            assert msg.metadata.num_delivered == attempt  # and never acked: "crashed"
        await puller.unsubscribe()
    finally:
        await nc.close()
    await bus.publish(event(2))
    async with running(ErrorBusConsumer(sub, nc=bus.nc), collector(handled)) as c:
        await until(lambda: c.stats.dead_lettered == 1 and c.stats.processed == 1, "settled")
        await until(lambda: bus.drained("crashy"), "drained")
    assert _ids(handled) == ["ev-2"] and c.stats.failed == 0
    [stored] = await bus.stored("errbus.consumer_dlq.crashy")
    record = decode_dead_letter(stored.data)
    assert record.cause is DeadLetterCause.NOT_ACKNOWLEDGED and record.deliveries == 3
    assert record.stream_seq == poison_seq and record.error_type == ""


async def test_the_servers_max_deliveries_advisory_is_dead_lettered(bus: Bus) -> None:
    """Every server-side delivery lost (max_deliver + SPARE_DELIVERIES): the server gives up
    and says so in an advisory; a running instance stores the dead letter from the stream."""
    seq = await bus.publish(event(1))
    sub = Subscription(durable="advised", max_deliver=1, ack_wait_secs=0.3, **FAST)
    async with ErrorBusConsumer(sub, nc=bus.nc) as c:  # watching, not pulling
        limit = (await bus.js.consumer_info("ERRBUS", "advised")).config.max_deliver
        nc = await nats.connect(bus.url)
        try:
            puller = await nc.jetstream().pull_subscribe_bind(durable="advised", stream="ERRBUS")
            for attempt in range(1, limit + 1):
                [msg] = await puller.fetch(1, timeout=PATIENCE_SECS)
                assert msg.metadata.num_delivered == attempt
            # the server notices the last delivery expired when it next looks for work
            with pytest.raises(TimeoutError):
                await puller.fetch(1, timeout=3 * sub.ack_wait_secs + 1)
            await until(lambda: c.stats.dead_lettered == 1, "dead letter from the advisory")
            await puller.unsubscribe()
        finally:
            await nc.close()
    assert c.stats.advisories == 1
    [stored] = await bus.stored("errbus.consumer_dlq.advised")
    record = decode_dead_letter(stored.data)
    assert record.cause is DeadLetterCause.MAX_DELIVERIES
    assert (record.stream_seq, record.deliveries) == (seq, limit)
    assert (
        record.payload == encode(event(1)) and record.subject == "errbus.error.MainPC.error.AgentA"
    )


# --- restart, sharing, fan-out ----------------------------------------------------------


async def test_a_restarted_consumer_resumes_after_what_it_acked(bus: Bus) -> None:
    for n in range(10):
        await bus.publish(event(n))
    sub = Subscription(durable="resume", batch_size=3, **FAST)
    first: list = []
    consumer = ErrorBusConsumer(sub, servers=[bus.url])

    async def stop_after_four(item: ErrorEvent, info: DeliveryInfo) -> None:
        first.append(item)
        if len(first) == 4:
            consumer.stop()  # the pulled batch is still finished

    async with consumer:
        await consumer.run(stop_after_four)
    assert 4 <= len(first) < 10
    for n in range(10, 15):
        await bus.publish(event(n))
    second: list = []
    async with running(ErrorBusConsumer(sub, servers=[bus.url]), collector(second)) as c:
        await until(lambda: bus.drained("resume"), "drained")
    assert _ids(first) + _ids(second) == [f"ev-{n}" for n in range(15)]
    assert c.stats.delivered == 15 - len(first)


async def test_two_instances_of_a_shared_durable_split_the_work(bus: Bus) -> None:
    sub = Subscription(durable="shared", batch_size=5, **FAST)
    got: dict[str, list[str]] = {"a": [], "b": []}

    def handler_for(name: str) -> Any:
        async def handle(item: ErrorEvent, info: DeliveryInfo) -> None:
            got[name].append(item.event_id)
            await asyncio.sleep(0.002)  # some work, so both instances have a share

        return handle

    a = ErrorBusConsumer(sub, servers=[bus.url])
    b = ErrorBusConsumer(sub, servers=[bus.url])
    async with running(a, handler_for("a")), running(b, handler_for("b")):
        for n in range(200):
            await bus.publish(event(n))
        await until(lambda: len(got["a"]) + len(got["b"]) >= 200, "all handled")
        await until(lambda: bus.drained("shared"), "drained")
    everything = got["a"] + got["b"]
    assert len(everything) == 200 and set(everything) == {f"ev-{n}" for n in range(200)}
    assert got["a"] and got["b"]
    assert a.stats.processed + b.stats.processed == 200


async def test_two_durables_each_get_everything(bus: Bus) -> None:
    for n in range(20):
        await bus.publish(event(n))
    got: dict[str, list] = {"fan-a": [], "fan-b": []}
    async with (
        running(
            ErrorBusConsumer(Subscription(durable="fan-a", **FAST), nc=bus.nc),
            collector(got["fan-a"]),
        ),
        running(
            ErrorBusConsumer(Subscription(durable="fan-b", **FAST), nc=bus.nc),
            collector(got["fan-b"]),
        ),
    ):
        for name in got:
            await until(lambda name=name: bus.drained(name), f"{name} drained")
    expected = [f"ev-{n}" for n in range(20)]
    assert _ids(got["fan-a"]) == expected and _ids(got["fan-b"]) == expected


# --- what cannot be typed ---------------------------------------------------------------


async def test_unknown_types_newer_versions_and_bad_bodies_are_skipped_or_raw(bus: Bus) -> None:
    subject = "errbus.error.PC2.error.X"
    newer = msgspec.json.decode(encode(event(2)))
    newer["schema_version"] = 2
    bodies = {
        "unknown_type": b'{"type": "mystery_event", "schema_version": 1}',
        "newer_version": msgspec.json.encode(newer),
        "undecodable": b"\xff not json",
        "invalid": b'{"type": "error_event", "event_id": 5}',
    }
    for data in bodies.values():
        await bus.publish_raw(subject, data)
    await bus.publish(event(5))

    skipped: list = []
    sub = Subscription(durable="skipper", **FAST)
    async with running(ErrorBusConsumer(sub, nc=bus.nc), collector(skipped)) as c:
        await until(lambda: bus.drained("skipper"), "skipper drained")
    assert _ids(skipped) == ["ev-5"]
    assert {r: c.stats.skipped_by[r] for r in bodies} == dict.fromkeys(bodies, 1)

    raw: list = []
    sub = Subscription(durable="raw", unknown="raw", **FAST)
    async with running(ErrorBusConsumer(sub, nc=bus.nc), collector(raw)) as c:
        await until(lambda: bus.drained("raw"), "raw drained")
    assert [type(item) for item in raw] == [RawMessage] * 4 + [ErrorEvent]
    assert [(r.reason, r.data, r.subject) for r in raw[:4]] == [
        (reason, data, subject) for reason, data in bodies.items()
    ]
    assert (raw[0].type, raw[1].schema_version) == ("mystery_event", 2)
    assert c.stats.raw == 4 and c.stats.skipped == 0 and c.stats.processed == 5


# --- the async iterator -----------------------------------------------------------------


async def test_async_iteration_acks_on_next_and_fails_on_exception(bus: Bus) -> None:
    for n in range(10):
        await bus.publish(event(n))
    sub = Subscription(durable="iter", **FAST)
    seen: list[str] = []
    first = ErrorBusConsumer(sub, nc=bus.nc)

    async def fail_at_ev3() -> None:
        async with first:
            async for item, _info in first:
                seen.append(item.event_id)
                if item.event_id == "ev-3":
                    raise RuntimeError("stop at ev-3")

    with pytest.raises(RuntimeError, match="stop at ev-3"):
        await fail_at_ev3()
    s = first.stats
    assert seen == ["ev-0", "ev-1", "ev-2", "ev-3"]
    assert (s.processed, s.failed, s.redelivered) == (3, 1, 1)
    assert s.delivered == 4 + s.released  # pulled but not handed out: given back

    again: list[tuple[str, int]] = []
    async with ErrorBusConsumer(sub, nc=bus.nc) as second:
        async for item, info in second:
            again.append((item.event_id, info.num_delivered))
            if len(again) == 7:
                break  # leaving normally acks the last one
    await until(lambda: bus.drained("iter"), "drained")
    assert sorted(eid for eid, _ in again) == [f"ev-{n}" for n in range(3, 10)]
    assert dict(again)["ev-3"] == 2
    assert second.stats.processed == 7


# --- from sync code ---------------------------------------------------------------------


def test_sync_facade_runs_a_plain_handler_from_a_plain_thread(
    nats_server: NatsServerProcess,
) -> None:
    provision(nats_server.url, [event(n) for n in range(5)])
    handled: list[tuple[str, str]] = []
    done = threading.Event()

    def handler(item: ErrorEvent, info: DeliveryInfo) -> None:
        handled.append((item.event_id, threading.current_thread().name))
        if len(handled) == 5:
            done.set()

    outcome: dict[str, object] = {}

    def plain_thread() -> None:
        consumer = ErrorBusConsumer(Subscription(durable="sync", **FAST), servers=[nats_server.url])
        with consumer.start_in_thread(handler):
            outcome["done"] = done.wait(PATIENCE_SECS)
        outcome["stats"] = consumer.stats.snapshot()

    caller = threading.Thread(target=plain_thread, name="plain")
    caller.start()
    caller.join(PATIENCE_SECS)
    assert not caller.is_alive() and outcome["done"] is True
    assert [eid for eid, _ in handled] == [f"ev-{n}" for n in range(5)]
    assert all(name not in ("plain", "MainThread") for _, name in handled)
    assert outcome["stats"]["processed"] == 5  # type: ignore[index]
    assert consumer_threads() == []


def test_a_sync_handler_may_stop_its_own_consumer(nats_server: NatsServerProcess) -> None:
    provision(nats_server.url, [event(n) for n in range(5)])
    consumer = ErrorBusConsumer(
        Subscription(durable="self-stop", **FAST), servers=[nats_server.url]
    )
    handled: list[str] = []

    def handler(item: ErrorEvent, info: DeliveryInfo) -> None:
        handled.append(item.event_id)
        if len(handled) == 3:
            consumer.stop()  # from the handler's thread: must not wait for itself

    consumer.start_in_thread(handler)
    assert wait_for(lambda: not consumer_threads())
    consumer.stop()
    assert 3 <= len(handled) <= 5 and consumer.stats.processed == len(handled)


def test_sync_facade_raises_when_it_cannot_start(nats_server: NatsServerProcess) -> None:
    consumer = ErrorBusConsumer(Subscription(durable="nostream"), servers=[nats_server.url])
    with pytest.raises(ConsumerError, match="stream ERRBUS does not exist"):
        consumer.start_in_thread(lambda item, info: None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    nowhere = ErrorBusConsumer(
        Subscription(durable="nowhere"), servers=[f"nats://127.0.0.1:{closed_port}"]
    )
    with pytest.raises(ConsumerError, match="cannot connect"):
        nowhere.start_in_thread(lambda item, info: None)
    assert consumer_threads() == []


async def test_a_sync_facade_needs_its_own_connection(bus: Bus) -> None:
    with pytest.raises(ValueError, match="servers="):
        ErrorBusConsumer(Subscription(durable="x"), nc=bus.nc).start_in_thread(lambda i, m: None)


async def test_from_bridge_config_reads_the_stream_the_bridge_provisions(bus: Bus) -> None:
    cfg = parse_config(f"machine: X\nnats: {{servers: ['{bus.url}']}}\n", "<test>")
    await bus.publish(event(1))
    got: list = []
    consumer = ErrorBusConsumer.from_bridge_config(cfg, Subscription(durable="cfg", **FAST))
    async with running(consumer, collector(got)):
        await until(lambda: bus.drained("cfg"), "drained")
    assert _ids(got) == ["ev-1"] and consumer.stream == cfg.stream.name


def test_subscription_refuses_bad_values() -> None:
    with pytest.raises(ValueError, match="durable"):
        Subscription(durable="has.dot")
    with pytest.raises(ValueError, match="backoff_secs"):
        Subscription(durable="ok", backoff_secs=(1.0, 0.0))
    with pytest.raises(ValueError, match="max_deliver"):
        Subscription(durable="ok", max_deliver=0)
    with pytest.raises(msgspec.ValidationError, match="min_severity"):
        msgspec.convert(
            {"durable": "ok", "severities": ["error"], "min_severity": "info"}, Subscription
        )
