"""BatchPublisher against a fake fast-ingest server: order, flow window, retries, one rejected
message, restarts, timeouts, abandon, bounded memory; and the wire decoding of
``bridge.adapters.fast_ingest`` on the replies nats-server 2.15.1 sent (its module note).

The fake follows the measured protocol in gap mode ``fail``: a flow ack every ``msgs``
persisted messages (``seq`` 0 for the first), ``Nats-Msg-Id`` duplicates dropped silently,
a refused message (too large: 10054, no stream: 503) not joining the batch so the next one
reveals a gap and the batch commits at the message before it, 10208 for an unknown batch,
10205 when batches are disabled. Replies travel through a queue, as they would on the wire.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import anyio
import pytest

from bridge.adapters.fast_ingest import (
    FastInbox,
    decode_reply,
    version_supports_fast_ingest,
)
from bridge.metrics import Metrics
from bridge.pipeline.acks import NotConnected, PublishRefused, RunCut
from bridge.pipeline.batch_publish import (
    BATCH_DISABLED,
    BATCH_UNKNOWN,
    BatchOp,
    BatchPublisher,
    BatchReply,
    ReplyKind,
    RunMessage,
)
from bridge.pipeline.publish import Outbound
from tests.support.fakes import FakeClock


class _Batch:
    def __init__(self, msgs: int) -> None:
        self.lseq = 0  # last batch seq that joined the batch
        self.fseq = 0  # last flow ack sent
        self.sseq = 0  # last stream seq stored by this batch
        self.msgs = msgs


class FakeFastServer:
    """A ``BatchTransport`` and the stream behind it (see the module note)."""

    def __init__(self, *, max_flow: int = 4) -> None:
        self.max_flow = max_flow
        self.stored: list[str] = []  # Nats-Msg-Id in stream order
        self.sent: list[tuple[str, int, BatchOp, str]] = []  # (batch, seq, op, msg id)
        self.batches: dict[str, _Batch] = {}
        self.too_large: set[str] = set()  # 10054
        self.no_stream: set[str] = set()  # 503
        self.refuse: set[str] = set()  # the client refuses them (PublishRefused)
        self.connected = True
        self.disabled = False
        self.dup_first_ends_batch = False  # nats-server main branch (see fast_ingest's note)
        self.deliver = True  # False: replies wait in the outbox (lost when dropped)
        self.outbox: list[BatchReply] = []
        self.on_reply: Callable[[BatchReply], None] = lambda r: None
        self.runs: list[int] = []  # the length of every publish_run

    async def publish_batched(
        self,
        subject: str,
        payload: bytes,
        headers: dict[str, str],
        batch: str,
        flow: int,
        seq: int,
        op: BatchOp,
    ) -> None:
        if not self.connected:
            raise NotConnected("fake server down")
        msg_id = headers.get("Nats-Msg-Id", "")
        if msg_id in self.refuse:
            raise PublishRefused("MaxPayloadError: maximum payload exceeded")
        self.sent.append((batch, seq, op, msg_id))
        self._process(batch, seq, op, msg_id, min(flow, self.max_flow))

    async def publish_run(self, batch: str, flow: int, messages: list[RunMessage]) -> None:
        """One message at a time through ``publish_batched`` (what the real transport's run
        must be equivalent to)."""
        self.runs.append(len(messages))
        for i, (subject, payload, headers, seq, op) in enumerate(messages):
            try:
                await self.publish_batched(subject, payload, headers, batch, flow, seq, op)
            except (NotConnected, PublishRefused) as exc:
                raise RunCut(i, exc) from exc

    def _reply(self, kind: ReplyKind, batch: str, seq: int, **kw: object) -> None:
        self.outbox.append(BatchReply(kind, batch, seq, **kw))  # type: ignore[arg-type]

    def _process(self, batch: str, seq: int, op: BatchOp, msg_id: str, msgs: int) -> None:
        if self.disabled:
            return self._reply(ReplyKind.ERROR, batch, seq, error_code=BATCH_DISABLED)
        if msg_id in self.no_stream:
            return self._reply(ReplyKind.NO_RESPONDERS, batch, seq, error_code=503)
        b = self.batches.get(batch)
        if b is None:
            if seq != 1 or op not in (BatchOp.START, BatchOp.COMMIT):
                return self._reply(ReplyKind.ERROR, batch, seq, error_code=BATCH_UNKNOWN)
            if msg_id in self.too_large:
                return self._reply(ReplyKind.ERROR, batch, seq, error_code=10054)
            if self.dup_first_ends_batch and msg_id in self.stored:
                stream_seq = self.stored.index(msg_id) + 1
                return self._reply(
                    ReplyKind.COMMIT, batch, 1, stream_seq=stream_seq, duplicate=True
                )
            b = self.batches[batch] = _Batch(msgs)
        if seq != b.lseq + 1:
            self._reply(ReplyKind.GAP, batch, seq)
            return self._commit(batch, b)
        if op is BatchOp.COMMIT_EOB:
            return self._commit(batch, b)
        if msg_id in self.too_large:
            return self._reply(ReplyKind.ERROR, batch, seq, error_code=10054)
        b.lseq = seq
        duplicate = msg_id in self.stored
        if not duplicate:
            self.stored.append(msg_id)
            b.sseq = len(self.stored)
        if op is BatchOp.COMMIT:
            if seq == 1:
                stream_seq = self.stored.index(msg_id) + 1
                del self.batches[batch]
                return self._reply(
                    ReplyKind.COMMIT, batch, 1, stream_seq=stream_seq, duplicate=duplicate
                )
            return self._commit(batch, b)
        if seq == 1:
            self._reply(ReplyKind.FLOW, batch, 0, flow_msgs=b.msgs)
        elif seq - b.fseq >= b.msgs:
            b.fseq = seq
            self._reply(ReplyKind.FLOW, batch, seq, flow_msgs=b.msgs)

    def _commit(self, batch: str, b: _Batch) -> None:
        del self.batches[batch]
        self._reply(ReplyKind.COMMIT, batch, b.lseq, stream_seq=b.sseq)

    def restart(self) -> None:
        """The server forgets every open batch (what is stored stays)."""
        self.batches.clear()
        self.outbox.clear()

    async def run(self) -> None:
        while True:
            await anyio.sleep(0.0005)
            if self.deliver and self.outbox:
                replies, self.outbox = self.outbox, []
                for reply in replies:
                    self.on_reply(reply)


def _item(n: int, msg_id: str | None = None, kind: str = "error_event") -> Outbound:
    mid = msg_id or f"id-{n}"
    return Outbound(f"errbus.error.m.error.s{n % 3}", b"x%d" % n, {"Nats-Msg-Id": mid}, kind, mid)


Done = list[tuple[str, str]]


def _publisher(
    server: FakeFastServer, clock: FakeClock, done: Done, metrics: Metrics | None = None, **kw
) -> BatchPublisher:
    opts: dict = {
        "max_in_flight": 8,
        "ack_timeout_secs": 1.0,
        "max_pending": 100,
        "retry_initial_secs": 0.002,
        "retry_max_secs": 0.004,
        "batch_max_msgs": 50,
    }
    opts.update(kw)
    pub = BatchPublisher(
        server,
        metrics or Metrics(),
        clock=clock,
        rng=random.Random(1),
        on_done=lambda i, o, a: done.append((i.msg_id, o)),
        batch_id_prefix="t",
        **opts,
    )
    server.on_reply = pub.on_reply
    return pub


async def _running(
    server: FakeFastServer, pub: BatchPublisher, body: Callable[[], Awaitable[None]]
) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.run)
        tg.start_soon(pub.run)
        await body()
        tg.cancel_scope.cancel()


async def _until(check: Callable[[], bool], clock: FakeClock | None = None) -> None:
    """Wait (at most 5 s) until ``check()``; move the fake clock past backoff holds meanwhile."""
    with anyio.fail_after(5):
        while not check():
            if clock is not None:
                clock.advance(0.01)
            await anyio.sleep(0.001)


def _ids(n: int) -> list[str]:
    return [f"id-{i}" for i in range(n)]


def _settled_once(done: Done, ids: list[str]) -> bool:
    return sorted(m for m, _ in done) == sorted(ids)


# -- the happy path --------------------------------------------------------------------


async def test_messages_are_stored_once_in_order_and_settled_once_per_message() -> None:
    server, clock, done, metrics = FakeFastServer(), FakeClock(), [], Metrics()
    pub = _publisher(server, clock, done, metrics, batch_max_msgs=10)
    for n in range(25):
        assert pub.submit(_item(n))

    async def body() -> None:
        await _until(lambda: len(done) == 25)

    await _running(server, pub, body)
    assert server.stored == _ids(25)
    assert done == [(i, "stored") for i in _ids(25)]
    assert pub.batches == 3 and pub.backlog == 0 and pub.late_acks == 0
    assert metrics.acked.labels("error_event")._value.get() == 25
    assert metrics.published.labels("error_event")._value.get() == 25
    ops = [op for batch, _, op, _ in server.sent if batch == "t1"]
    assert ops == [BatchOp.START] + [BatchOp.APPEND] * 8 + [BatchOp.COMMIT]


async def test_a_batch_waits_for_its_first_reply_before_sending_more() -> None:
    server, clock, done = FakeFastServer(), FakeClock(), []
    server.deliver = False
    pub = _publisher(server, clock, done)
    for n in range(5):
        pub.submit(_item(n))

    async def body() -> None:
        await _until(lambda: len(server.sent) == 1)
        await anyio.sleep(0.05)  # the publisher had every chance to send more
        assert len(server.sent) == 1 and server.sent[0][2] is BatchOp.START
        server.deliver = True
        await _until(lambda: len(done) == 5)

    await _running(server, pub, body)
    assert server.stored == _ids(5)


async def test_one_message_is_a_one_message_batch_with_the_stream_sequence() -> None:
    server, clock, done, metrics = FakeFastServer(), FakeClock(), [], Metrics()
    acks: list = []
    pub = _publisher(server, clock, done, metrics)
    pub.on_done = lambda i, o, a: acks.append((i.msg_id, o, a.seq if a else None))
    pub.submit(_item(1))

    async def body() -> None:
        await _until(lambda: len(acks) == 1)
        pub.submit(_item(2, msg_id="id-1"))  # the same id again
        await _until(lambda: len(acks) == 2)

    await _running(server, pub, body)
    assert [(b, s, op) for b, s, op, _ in server.sent] == [
        ("t1", 1, BatchOp.COMMIT),
        ("t2", 1, BatchOp.COMMIT),
    ]
    assert acks == [("id-1", "stored", 1), ("id-1", "duplicate", 1)]
    assert metrics.duplicates.labels("jetstream")._value.get() == 1


async def test_the_window_bounds_unacknowledged_messages() -> None:
    server, clock, done = FakeFastServer(max_flow=2), FakeClock(), []
    pub = _publisher(server, clock, done, max_in_flight=4, max_outstanding_acks=2)
    for n in range(40):
        pub.submit(_item(n))
    peak = 0

    def watch(reply: BatchReply) -> None:
        nonlocal peak
        peak = max(peak, pub.in_flight)
        pub.on_reply(reply)

    server.on_reply = watch

    async def body() -> None:
        await _until(lambda: len(done) == 40)

    await _running(server, pub, body)
    assert 0 < peak <= 4 and server.stored == _ids(40)


async def test_duplicates_inside_and_across_batches_are_settled_once() -> None:
    # flow acks every 8: each batch of 6 is settled by its commit, which tells "nothing new"
    server, clock, done, metrics = FakeFastServer(max_flow=8), FakeClock(), [], Metrics()
    pub = _publisher(server, clock, done, metrics, batch_max_msgs=6, max_in_flight=16)
    ids = ["a", "b", "a", "c", "b", "d", "a", "b", "c", "d", "a", "b"]  # last batch: all copies
    for n, mid in enumerate(ids):
        pub.submit(_item(n, msg_id=mid))

    async def body() -> None:
        await _until(lambda: len(done) == len(ids))

    await _running(server, pub, body)
    assert server.stored == ["a", "b", "c", "d"]
    # first batch: the copies of "a" and "b" inside it are known to the publisher (it sent
    # their first copies in the same batch); last batch: stream seq 0, all copies
    first = ["stored", "stored", "duplicate", "stored", "duplicate", "stored"]
    assert [o for _, o in done] == first + ["duplicate"] * 6
    assert metrics.duplicates.labels("jetstream")._value.get() == 8


async def test_on_done_many_reports_messages_settled_alike_together_in_order() -> None:
    # the scenario above, with the batched callback: same outcomes in the same order, the
    # copies one by one between the groups, the commit's last message alone (its sequence)
    server, clock, done, metrics = FakeFastServer(max_flow=8), FakeClock(), [], Metrics()
    calls: list[tuple[str, list[str], str, int]] = []
    pub = _publisher(server, clock, done, metrics, batch_max_msgs=6, max_in_flight=16)
    pub.on_done = lambda i, o, a: calls.append(("one", [i.msg_id], o, a.seq if a else 0))
    pub.on_done_many = lambda items, o, a: calls.append(
        ("many", [i.msg_id for i in items], o, a.seq)
    )
    ids = ["a", "b", "a", "c", "b", "d", "a", "b", "c", "d", "a", "b"]
    for n, mid in enumerate(ids):
        pub.submit(_item(n, msg_id=mid))

    async def body() -> None:
        await _until(lambda: sum(len(c[1]) for c in calls) == len(ids))

    await _running(server, pub, body)
    assert calls == [
        ("many", ["a", "b"], "stored", 0),
        ("one", ["a"], "duplicate", 0),
        ("many", ["c"], "stored", 0),
        ("one", ["b"], "duplicate", 0),
        ("many", ["d"], "stored", 4),
        ("many", ["a", "b", "c", "d", "a", "b"], "duplicate", 0),
    ]
    assert done == [] and metrics.duplicates.labels("jetstream")._value.get() == 8


async def test_a_server_that_ends_a_batch_on_a_duplicate_first_message_loses_nothing() -> None:
    server, clock, done = FakeFastServer(), FakeClock(), []
    server.dup_first_ends_batch = True
    pub = _publisher(server, clock, done)
    for n in range(3):
        pub.submit(_item(n))

    async def body() -> None:
        await _until(lambda: len(done) == 3)
        for n, mid in enumerate(["id-0", "id-1", "x", "y"]):  # a retry after a lost commit
            pub.submit(_item(n, msg_id=mid))
        await _until(lambda: len(done) == 7)

    await _running(server, pub, body)
    assert server.stored == ["id-0", "id-1", "id-2", "x", "y"]
    assert done[3:] == [
        ("id-0", "duplicate"),
        ("id-1", "duplicate"),
        ("x", "stored"),
        ("y", "stored"),
    ]


# -- failures --------------------------------------------------------------------------


async def test_one_too_large_message_is_rejected_and_the_rest_of_its_batch_stored_once() -> None:
    server, clock, done, metrics = FakeFastServer(), FakeClock(), [], Metrics()
    server.too_large.add("id-3")
    pub = _publisher(server, clock, done, metrics, max_rejections=3)
    for n in range(10):
        pub.submit(_item(n))

    async def body() -> None:
        await _until(lambda: len(done) == 10, clock)

    await _running(server, pub, body)
    assert server.stored == [i for i in _ids(10) if i != "id-3"]
    assert ("id-3", "rejected") in done and _settled_once(done, _ids(10))
    assert sum(1 for _, _, _, m in server.sent if m == "id-3") == 3
    assert metrics.dropped.labels("rejected")._value.get() == 1
    assert pub.backlog == 0


async def test_a_refused_last_message_ends_its_batch_with_an_end_of_batch() -> None:
    server, clock, done = FakeFastServer(), FakeClock(), []
    server.too_large.add("id-2")
    pub = _publisher(server, clock, done, max_rejections=1)
    for n in range(3):
        pub.submit(_item(n))

    async def body() -> None:
        await _until(lambda: len(done) == 3, clock)

    await _running(server, pub, body)
    assert server.stored == ["id-0", "id-1"] and ("id-2", "rejected") in done
    assert ("t1", 4, BatchOp.COMMIT_EOB, "") in server.sent


async def test_no_responders_are_retried_and_never_overtaken_by_newer_messages() -> None:
    server, clock, done = FakeFastServer(), FakeClock(), []
    server.no_stream.add("id-4")
    pub = _publisher(server, clock, done)
    for n in range(10):
        pub.submit(_item(n))

    async def body() -> None:
        await _until(lambda: sum(1 for s in server.sent if s[3] == "id-4") >= 3, clock)
        assert server.stored == _ids(4)  # nothing after id-4 stored while it fails
        assert pub.retrying > 0 and ("id-4", "stored") not in done
        server.no_stream.clear()  # the stream covers its subject now
        await _until(lambda: len(done) == 10, clock)

    await _running(server, pub, body)
    assert server.stored == _ids(10) and _settled_once(done, _ids(10))


async def test_a_server_restart_mid_batch_loses_nothing_and_stores_nothing_twice() -> None:
    server, clock, done = FakeFastServer(), FakeClock(), []
    server.deliver = False  # replies of the first batch are lost with the restart
    pub = _publisher(server, clock, done, max_in_flight=16)
    for n in range(30):
        pub.submit(_item(n))

    async def body() -> None:
        await _until(lambda: len(server.sent) == 1)
        server.deliver = True
        await _until(lambda: len(server.sent) >= 8)
        server.deliver = False
        await _until(lambda: len(server.sent) >= 12)
        server.restart()  # batch t1 forgotten; its next messages are answered 10208
        server.deliver = True
        await _until(lambda: len(done) == 30, clock)

    await _running(server, pub, body)
    assert server.stored == _ids(30)  # once each, in order
    assert _settled_once(done, _ids(30))


async def test_ack_timeout_retries_with_the_same_msg_id_and_ignores_late_replies() -> None:
    server, clock, done, metrics = FakeFastServer(), FakeClock(), [], Metrics()
    server.deliver = False
    pub = _publisher(server, clock, done, metrics)
    pub.submit(_item(1))

    async def body() -> None:
        await _until(lambda: len(server.sent) == 1)
        lost = server.outbox[:]
        server.outbox.clear()
        clock.advance(1.5)
        assert pub.expire_overdue() == 1
        server.deliver = True
        await _until(lambda: len(done) == 1, clock)
        for reply in lost:  # the first attempt's reply, late
            pub.on_reply(reply)

    await _running(server, pub, body)
    assert [s[3] for s in server.sent] == ["id-1", "id-1"]
    assert done == [("id-1", "duplicate")] and pub.late_acks == 1
    assert metrics.publish_failures.labels("timeout")._value.get() == 1


async def test_a_disconnect_retries_the_open_batch_in_order_after_resume() -> None:
    server, clock, done = FakeFastServer(), FakeClock(), []
    pub = _publisher(server, clock, done, max_in_flight=16)
    server.deliver = False
    for n in range(12):
        pub.submit(_item(n))

    async def body() -> None:
        await _until(lambda: len(server.sent) == 1)
        pub.on_reply(server.outbox.pop(0))  # the batch starts; nothing else is answered
        await _until(lambda: len(server.sent) >= 6)
        server.connected = False
        server.outbox.clear()  # lost with the connection
        server.deliver = True
        pub.connection_lost()
        assert pub.in_flight == 0 and pub.retrying > 0
        for n in range(12, 16):
            pub.submit(_item(n))
        await anyio.sleep(0.02)
        server.connected = True
        pub.resume()
        await _until(lambda: len(done) == 16)

    await _running(server, pub, body)
    assert server.stored == _ids(16) and _settled_once(done, _ids(16))


async def test_a_message_the_client_refuses_is_rejected_at_once() -> None:
    server, clock, done = FakeFastServer(), FakeClock(), []
    server.refuse.add("id-1")
    pub = _publisher(server, clock, done)
    for n in range(3):
        pub.submit(_item(n))

    async def body() -> None:
        await _until(lambda: len(done) == 3)

    await _running(server, pub, body)
    assert server.stored == ["id-0", "id-2"] and ("id-1", "rejected") in done


async def test_a_refusal_inside_a_run_puts_the_rest_of_the_run_back_in_order() -> None:
    """Messages go out in runs (one ``publish_run`` each); when the client refuses one in the
    middle of a run, that one is rejected, the run's later messages were not sent and go
    again first, in their order, and a copy among them is still told from an original."""
    server, clock, done = FakeFastServer(max_flow=100), FakeClock(), []
    server.refuse.add("id-4")
    pub = _publisher(server, clock, done, max_in_flight=64)
    items = [_item(n) for n in range(10)] + [_item(10, msg_id="id-6")]  # the last: a copy
    server.deliver = False
    for item in items:
        pub.submit(item)

    async def body() -> None:
        await _until(lambda: len(server.sent) == 1)
        server.deliver = True
        pub.on_reply(server.outbox.pop(0))  # the batch started: the rest goes as runs
        await _until(lambda: len(done) == 11)

    await _running(server, pub, body)
    kept = [f"id-{n}" for n in range(10) if n != 4]
    assert server.stored == kept and max(server.runs) > 1
    assert [mid for _, seq, _, mid in server.sent] == ["id-0", *kept[1:], "id-6"]
    assert sorted(done) == sorted(
        [(mid, "stored") for mid in kept] + [("id-4", "rejected"), ("id-6", "duplicate")]
    )


async def test_a_stream_without_batches_keeps_every_message_for_a_retry() -> None:
    server, clock, done = FakeFastServer(), FakeClock(), []
    server.disabled = True
    pub = _publisher(server, clock, done)
    for n in range(5):
        pub.submit(_item(n))

    async def body() -> None:
        await _until(lambda: len(server.sent) >= 3, clock)
        assert done == [] and pub.backlog == 5
        server.disabled = False  # allow_batched switched on
        await _until(lambda: len(done) == 5, clock)

    await _running(server, pub, body)
    assert server.stored == _ids(5)


# -- shape of batches, memory, shutdown, reload ----------------------------------------


async def test_batches_end_at_batch_max_and_when_too_old() -> None:
    server, clock, done = FakeFastServer(max_flow=2), FakeClock(), []
    server.deliver = False
    pub = _publisher(server, clock, done, batch_max_msgs=4, max_batch_age_secs=3.0)
    for n in range(6):
        pub.submit(_item(n))

    async def body() -> None:
        await _until(lambda: len(server.sent) == 1)
        clock.advance(5.0)  # the batch is old now: its next message commits it
        server.deliver = True
        await _until(lambda: len(done) == 6)

    await _running(server, pub, body)
    assert [op for b, _, op, _ in server.sent if b == "t1"] == [BatchOp.START, BatchOp.COMMIT]
    assert server.stored == _ids(6) and pub.batches == 2  # 2 (aged), then 4 (batch_max)


async def test_an_emptied_queue_ends_the_batch_with_an_end_of_batch() -> None:
    server, clock, done = FakeFastServer(max_flow=2), FakeClock(), []
    pub = _publisher(server, clock, done, max_in_flight=4)
    server.deliver = False
    for n in range(6):
        pub.submit(_item(n))

    async def body() -> None:
        await _until(lambda: len(server.sent) == 1)
        server.deliver = True
        await _until(lambda: len(done) == 6)

    await _running(server, pub, body)
    assert server.stored == _ids(6)
    assert all(op is not BatchOp.PING for _, _, op, _ in server.sent)
    assert server.sent[-1][2] in (BatchOp.COMMIT, BatchOp.COMMIT_EOB)


async def test_an_idle_batch_stays_open_for_batch_idle_secs_and_takes_later_messages() -> None:
    server, clock, done = FakeFastServer(max_flow=2), FakeClock(), []
    pub = _publisher(
        server, clock, done, max_in_flight=64, batch_idle_secs=1.0, ack_timeout_secs=10.0
    )
    for n in range(5):
        pub.submit(_item(n))

    async def body() -> None:
        await _until(lambda: len(server.sent) == 5)
        await _until(lambda: len(done) == 4)  # flow acks every 2: the 5th waits for the end
        await anyio.sleep(0.05)
        assert len(server.sent) == 5 and pub.batches == 1  # idle, but still open
        for n in range(5, 8):
            pub.submit(_item(n))
        await _until(lambda: len(server.sent) == 8)
        clock.advance(0.5)
        await anyio.sleep(0.05)
        assert len(server.sent) == 8  # idle for less than batch_idle_secs
        clock.advance(0.6)
        await _until(lambda: len(server.sent) == 9 and len(done) == 8)

    await _running(server, pub, body)
    assert server.stored == _ids(8) and pub.batches == 1
    ops = [op for _, _, op, _ in server.sent]
    assert ops == [BatchOp.START] + [BatchOp.APPEND] * 7 + [BatchOp.COMMIT_EOB]
    assert done == [(i, "stored") for i in _ids(8)]


async def test_an_idle_batch_ends_when_too_old_even_while_messages_keep_coming() -> None:
    server, clock, done = FakeFastServer(max_flow=2), FakeClock(), []
    pub = _publisher(
        server,
        clock,
        done,
        max_in_flight=64,
        batch_idle_secs=1.0,
        max_batch_age_secs=3.0,
        ack_timeout_secs=10.0,
    )
    for n in range(3):
        pub.submit(_item(n))

    async def body() -> None:
        for n in range(3, 9):
            await _until(lambda n=n: len(server.sent) == n)
            clock.advance(0.9)  # never idle for batch_idle_secs
            pub.submit(_item(n))
        await _until(lambda: len(done) == 9)

    await _running(server, pub, body)
    assert server.stored == _ids(9)
    # the first reached 3 s of age and ended with its next message (the 7th); the two after
    # it each found the queue with one message: one-message batches
    assert pub.batches == 3
    assert [op for b, _, op, _ in server.sent if b == "t1"] == (
        [BatchOp.START] + [BatchOp.APPEND] * 5 + [BatchOp.COMMIT]
    )


async def test_memory_stays_bounded_while_the_server_does_not_answer() -> None:
    server, clock, done = FakeFastServer(max_flow=4), FakeClock(), []
    pub = _publisher(server, clock, done, max_in_flight=8, max_pending=20)
    accepted = sum(pub.submit(_item(n)) for n in range(50))
    assert accepted == 20 and pub.room == 0

    server.deliver = False  # the test hands over the replies it wants

    async def body() -> None:
        await _until(lambda: len(server.sent) == 1)
        pub.on_reply(server.outbox.pop(0))  # the batch starts; no flow ack follows
        await _until(lambda: len(server.sent) == 8)
        assert pub.in_flight == 8  # the window
        for _ in range(3):  # rounds of timeouts and retries, nothing answered
            clock.advance(2.0)
            assert pub.expire_overdue() > 0
            assert pub.in_flight == 0 and pub.retrying > 0
            assert pub.backlog == 20 and pub.room == 0
            sent = len(server.sent)
            await _until(lambda sent=sent: len(server.sent) > sent, clock)  # a new batch
            assert pub.in_flight <= 8 and pub.backlog == 20
        server.outbox.clear()
        server.deliver = True
        clock.advance(2.0)
        pub.expire_overdue()
        await _until(lambda: pub.backlog == 0, clock)

    await _running(server, pub, body)
    assert server.stored == _ids(20) and _settled_once(done, _ids(20))


async def test_abandon_all_reports_every_unsettled_message_once() -> None:
    server, clock, done = FakeFastServer(), FakeClock(), []
    server.deliver = False
    pub = _publisher(server, clock, done)
    for n in range(6):
        pub.submit(_item(n))

    async def body() -> None:
        await _until(lambda: len(server.sent) == 1)

    await _running(server, pub, body)
    assert pub.abandon_all() == 6
    assert sorted(done) == [(i, "abandoned") for i in _ids(6)]
    assert pub.backlog == 0 and pub.abandon_all() == 0


async def test_reconfigure_changes_the_window_and_limits_live() -> None:
    server, clock, done = FakeFastServer(max_flow=8), FakeClock(), []
    pub = _publisher(server, clock, done, max_pending=5)
    pub.reconfigure(
        max_in_flight=2,
        max_pending=30,
        ack_timeout_secs=2.0,
        retry_initial_secs=0.001,
        retry_max_secs=0.002,
    )
    assert all(pub.submit(_item(n)) for n in range(30))
    peak = 0

    def watch(reply: BatchReply) -> None:
        nonlocal peak
        peak = max(peak, pub.in_flight)
        pub.on_reply(reply)

    server.on_reply = watch

    async def body() -> None:
        await _until(lambda: len(done) == 30)

    await _running(server, pub, body)
    assert peak <= 2 and server.stored == _ids(30) and pub.ack_timeout_secs == 2.0


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        BatchPublisher(FakeFastServer(), Metrics(), batch_max_msgs=0)
    with pytest.raises(ValueError, match="batch_idle_secs"):
        BatchPublisher(FakeFastServer(), Metrics(), batch_idle_secs=10.0)
    with pytest.raises(ValueError, match="batch_idle_secs"):
        BatchPublisher(FakeFastServer(), Metrics(), batch_idle_secs=1.0, ack_timeout_secs=1.0)
    with pytest.raises(ValueError):
        BatchPublisher(FakeFastServer(), Metrics(), batch_id_prefix="a.b")


# -- the wire side: what nats-server 2.15.1 answered (bridge.adapters.fast_ingest) ------

INBOX = FastInbox("_INBOX.t.abc.fi")


def _decode(seq: int, op: BatchOp, data: bytes, headers: dict | None = None) -> BatchReply | None:
    return decode_reply(INBOX.reply("b1", 500, seq, op), data, headers, INBOX)


def test_reply_subjects_round_trip() -> None:
    subject = INBOX.reply("b1", 500, 7, BatchOp.APPEND)
    assert subject == "_INBOX.t.abc.fi.b1.500.fail.7.1.$FI"
    where = INBOX.parse(subject)
    assert where is not None and (where.batch, where.flow, where.seq, where.op) == (
        "b1",
        500,
        7,
        BatchOp.APPEND,
    )
    assert INBOX.parse("_INBOX.t.abc.fi.b1.500.fail.7.9.$FI") is None  # unknown op
    assert INBOX.parse("_INBOX.other.b1.500.fail.7.1.$FI") is None
    assert INBOX.parse("_INBOX.t.abc.fi.42") is None
    with pytest.raises(ValueError):
        FastInbox("_INBOX.*")


@pytest.mark.parametrize(
    ("data", "headers", "expected"),
    [
        (b'{"type":"ack","seq":0,"msgs":5}', None, (ReplyKind.FLOW, 0, 5, 0, False, 0)),
        (b'{"type":"ack","seq":10,"msgs":5}', None, (ReplyKind.FLOW, 10, 5, 0, False, 0)),
        (b'{"type":"gap","last_seq":3,"seq":4}', None, (ReplyKind.GAP, 4, 0, 0, False, 0)),
        (
            b'{"stream":"S","seq":23,"batch":"b1","count":2}',
            None,
            (ReplyKind.COMMIT, 2, 0, 23, False, 0),
        ),
        (
            b'{"stream":"S","seq":1,"duplicate": true,"batch":"b1","count":1}',
            None,
            (ReplyKind.COMMIT, 1, 0, 1, True, 0),
        ),
        (
            b'{"stream":"S","seq":0,"batch":"b1","count":3}',
            None,
            (ReplyKind.COMMIT, 3, 0, 0, False, 0),
        ),
        (
            b'{"error":{"code":400,"err_code":10054,"description":"message size exceeds maximum'
            b' allowed"},"stream":"S","seq":0}',
            None,
            (ReplyKind.ERROR, 7, 0, 0, False, 10054),
        ),
        (
            b'{"error":{"code":400,"err_code":10208,"description":"batch publish ID unknown"},'
            b'"stream":"S","seq":0}',
            None,
            (ReplyKind.ERROR, 7, 0, 0, False, BATCH_UNKNOWN),
        ),
        (
            b'{"type":"err","seq":9,"error":{"code":400,"err_code":10071,"description":"x"}}',
            None,
            (ReplyKind.ERROR, 9, 0, 0, False, 10071),
        ),
        (b"", {"Status": "503"}, (ReplyKind.NO_RESPONDERS, 7, 0, 0, False, 503)),
    ],
)
def test_measured_replies_decode(data: bytes, headers: dict | None, expected: tuple) -> None:
    reply = _decode(7, BatchOp.APPEND, data, headers)
    assert reply is not None and reply.batch == "b1"
    got = (
        reply.kind,
        reply.seq,
        reply.flow_msgs,
        reply.stream_seq,
        reply.duplicate,
        reply.error_code,
    )
    assert got == expected


def test_unknown_or_unreadable_replies_are_ignored() -> None:
    assert _decode(1, BatchOp.START, b'{"type":"future","seq":1}') is None
    assert _decode(1, BatchOp.START, b"not json") is None
    assert decode_reply("_INBOX.t.abc.fi.7", b"{}", None, INBOX) is None


@pytest.mark.parametrize(
    ("version", "ok"),
    [
        ("2.15.1", True),
        ("v2.14.0", True),
        ("2.14.0-RC.2", True),
        ("3.0.0", True),
        ("2.12.4", False),
        ("2.11.0+build", False),
        ("0.0.0-unknown", False),
        ("garbage", False),
    ],
)
def test_version_gate(version: str, ok: bool) -> None:
    assert version_supports_fast_ingest(version) is ok
