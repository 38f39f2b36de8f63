"""The pipelined publisher against a real nats-server: acks, dedup by Nats-Msg-Id,
provisioning, and a server restart mid-stream losing nothing and storing nothing twice."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest
from nats.aio.client import Client

from bridge.adapters.jetstream import JetStreamLink, _hpub
from bridge.adapters.nats_server import NatsServerProcess
from bridge.config.load import parse_config
from bridge.errors import ProvisioningError
from bridge.metrics import Metrics
from bridge.pipeline.acks import PublishRefused, RunCut
from bridge.pipeline.outbound import OutboundBuilder
from bridge.pipeline.publish import Outbound, PipelinedPublisher, WireHeaders
from contracts.messages import DeadLetter, DeadLetterReason
from contracts.subjects import Subjects
from tests.support.nats_server import running_nats_server
from tests.support.stream import fetch_all, wait_for_count

pytestmark = pytest.mark.integration

CFG = parse_config(
    "machine: T\nnats: {reconnect_wait_secs: 0.1}\n"
    "publish: {ack_timeout_secs: 0.5, retry_initial_secs: 0.05, retry_max_secs: 0.2}\n"
)


def _item(n: int, msg_id: str | None = None) -> Outbound:
    mid = msg_id or f"id-{n}"
    return Outbound(
        f"errbus.error.T.error.s{n % 3}", b'{"n":%d}' % n, {"Nats-Msg-Id": mid}, "error_event", mid
    )


async def _with_publisher(url: str, body, done: list | None = None) -> Metrics:
    metrics = Metrics()
    link = JetStreamLink(CFG.nats, [url], name="test")
    await link.connect()
    try:
        await link.ensure_stream(CFG.stream)
        prefix = f"_INBOX.test.{uuid.uuid4().hex}"
        pub = PipelinedPublisher(
            link,
            prefix,
            metrics,
            max_in_flight=64,
            ack_timeout_secs=0.5,
            retry_initial_secs=0.05,
            retry_max_secs=0.2,
            on_done=(lambda i, o, a: done.append((i.msg_id, o))) if done is not None else None,
        )
        await link.subscribe_acks(prefix, pub.on_ack)
        async with anyio.create_task_group() as tg:
            tg.start_soon(pub.run)
            await body(pub)
            with anyio.fail_after(30):
                while pub.backlog:
                    await anyio.sleep(0.01)
            assert pub.abandon_all() == 0
            tg.cancel_scope.cancel()
    finally:
        await link.close()
    return metrics


async def test_messages_are_acked_and_copies_stored_once(nats_server: NatsServerProcess) -> None:
    done: list = []

    async def body(pub: PipelinedPublisher) -> None:
        for n in range(500):
            pub.submit(_item(n))
        for n in range(100):
            pub.submit(_item(1000 + n, msg_id=f"id-{n}"))  # same ids again

    metrics = await _with_publisher(nats_server.url, body, done)
    stored = await fetch_all(nats_server.url, "ERRBUS", raw=True)
    assert [m.headers["Nats-Msg-Id"] for m in stored] == [f"id-{n}" for n in range(500)]
    assert sorted(o for _, o in done).count("duplicate") == 100
    assert metrics.duplicates.labels("jetstream")._value.get() == 100


async def test_server_restart_mid_stream_loses_nothing_and_duplicates_nothing(
    tmp_path: Path,
) -> None:
    store = tmp_path / "nats"
    with running_nats_server(store) as server:
        port = server.port
        url = server.url

    async def body(pub: PipelinedPublisher) -> None:
        nonlocal server
        for n in range(300):
            pub.submit(_item(n))
        await anyio.sleep(0.3)
        server.stop()  # outage: publishes time out or cannot be sent
        for n in range(300, 600):
            pub.submit(_item(n))
            if n % 50 == 0:
                await anyio.sleep(0.05)
        await anyio.sleep(1.0)
        server = NatsServerProcess(store, port=port)
        await anyio.to_thread.run_sync(server.start)

    server = NatsServerProcess(store, port=port)
    server.start()
    try:
        metrics = await _with_publisher(url, body)
        assert await wait_for_count(server.url, "ERRBUS", 600, timeout_secs=20) == 600
        stored = await fetch_all(server.url, "ERRBUS", raw=True)
    finally:
        server.stop()
    ids = [m.headers["Nats-Msg-Id"] for m in stored]
    assert sorted(ids) == sorted(f"id-{n}" for n in range(600)) and len(set(ids)) == 600
    failures = sum(
        metrics.publish_failures.labels(r)._value.get()
        for r in ("timeout", "no_responders", "not_connected")
    )
    assert failures > 0  # the outage really happened


async def test_overlapping_stream_is_refused_with_a_clear_error(
    nats_server: NatsServerProcess,
) -> None:
    import nats

    nc = await nats.connect(nats_server.url)
    await nc.jetstream().add_stream(name="SQUATTER", subjects=["errbus.error.>"])
    await nc.close()
    link = JetStreamLink(CFG.nats, [nats_server.url], name="test")
    await link.connect()
    try:
        with pytest.raises(ProvisioningError, match="overlap"):
            await link.ensure_stream(CFG.stream)
    finally:
        await link.close()


@contextlib.asynccontextmanager
async def _capturing_link(
    nats_server: NatsServerProcess,
) -> AsyncIterator[tuple[JetStreamLink, Client, list[bytes]]]:
    """A connected link with the stream provisioned, its client, and every write it queues to
    the connection's buffer (``_send_command``), in order; closed on exit."""
    link = JetStreamLink(CFG.nats, [nats_server.url], name="test")
    await link.connect()
    try:
        await link.ensure_stream(CFG.stream)
        nc = link.nc
        assert nc is not None
        sent: list[bytes] = []
        original = nc._send_command

        async def capture(cmd: bytes, priority: bool = False) -> None:
            sent.append(bytes(cmd))
            await original(cmd, priority)

        nc._send_command = capture  # type: ignore[method-assign]
        yield link, nc, sent
    finally:
        await link.close()


def _dead_letter(max_payload: int, event_id: str) -> Outbound:
    """A dead letter built as the bridge builds it (its headers carry their ``wire`` form)."""
    return OutboundBuilder(Subjects("errbus"), "Load PC", max_payload).build(
        DeadLetter(
            event_id=event_id,
            received_at=datetime(2026, 12, 4, tzinfo=UTC),
            machine="T",
            reason=DeadLetterReason.INVALID_UTF8,
            frames=[b"\xff"],
            frame_sizes=[1],
        )
    )


async def test_raw_publish_path_writes_the_bytes_nats_py_would_and_falls_back_on_odd_headers(
    nats_server: NatsServerProcess,
) -> None:
    async with _capturing_link(nats_server) as (link, nc, sent):
        headers = {
            "Nats-Msg-Id": "lt-p001-000000007",
            "Busbridge-Contract": "error_event",
            "Busbridge-Origin": "Load PC",
        }
        await nc.publish(
            "errbus.error.T.error.s1", b'{"n":1}', reply="_INBOX.t.1", headers=headers
        )  # nats-py
        await link.publish("errbus.error.T.error.s1", b'{"n":1}', "_INBOX.t.1", headers)  # raw path
        assert len(sent) == 2 and sent[0] == sent[1]
        assert (
            _hpub(nc, "errbus.error.T.error.s1", b'{"n":1}', "_INBOX.t.1", headers) == sent[0]
        )  # the raw path wrote it
        again = {**headers, "Nats-Msg-Id": "lt-p001-000000008"}  # the other lines kept: reused
        later = {"Busbridge-Origin": "Load PC", "Nats-Msg-Id": "lt-p001-000000009"}  # id not first
        for other in (again, later):
            await nc.publish("errbus.error.T.error.s1", b"{}", reply="_INBOX.t.6", headers=other)
            await link.publish("errbus.error.T.error.s1", b"{}", "_INBOX.t.6", other)
            assert sent[-2] == sent[-1] and other["Nats-Msg-Id"].encode() in sent[-1]
        del sent[-4:]
        built = _dead_letter(nc.max_payload, "dl-7")
        assert isinstance(built.headers, WireHeaders) and built.headers.wire is not None
        await nc.publish(built.subject, built.payload, reply="_INBOX.t.5", headers=built.headers)
        await link.publish(built.subject, built.payload, "_INBOX.t.5", built.headers)  # its wire
        assert sent[-2] == sent[-1]  # the section OutboundBuilder made is the one nats-py writes
        del sent[-2:]
        odd = {"Nats-Msg-Id": "odd-1", "Busbridge-Origin": " padded\r\nInjected: x"}
        await link.publish(
            "errbus.error.T.error.s2", b"{}", "_INBOX.t.2", odd
        )  # nats-py sanitises it
        await nc.publish("errbus.error.T.error.s2", b"{}", reply="_INBOX.t.2", headers=odd)
        assert _hpub(nc, "errbus.error.T.error.s2", b"{}", "_INBOX.t.2", odd) is None
        for bad in ("", "a b", "a\tb", "a\u00a0b", "a\u2028b", "a\x00b"):  # nats-py's way
            assert _hpub(nc, bad, b"{}", "_INBOX.t.3", {}) is None
            assert _hpub(nc, "errbus.x", b"{}", bad, {}) is None
        for value in (["list"], 7, None):  # not a str: nats-py's publish decides
            assert _hpub(nc, "errbus.x", b"{}", "_INBOX.t.4", {"X-Odd": value}) is None  # type: ignore[dict-item]
        assert (
            len(sent) == 4
            and sent[2] == sent[3]
            and b"Injected" in sent[2]
            and b"\r\nInjected" not in sent[2]
        )
    stored = await fetch_all(nats_server.url, "ERRBUS", raw=True)
    assert [m.headers["Nats-Msg-Id"] for m in stored] == [
        "lt-p001-000000007",
        "lt-p001-000000008",
        "lt-p001-000000009",
        "dl-7",
        "odd-1",
    ]  # copies collapsed by msg id
    assert stored[0].headers["Busbridge-Origin"] == "Load PC" and stored[0].data == b'{"n":1}'


async def test_a_run_is_written_as_nats_py_would_write_each_message_and_cut_at_a_refused_one(
    nats_server: NatsServerProcess,
) -> None:
    async with _capturing_link(nats_server) as (link, nc, sent):
        plain = {"Nats-Msg-Id": "run-1", "Busbridge-Contract": "error_event"}
        built = _dead_letter(nc.max_payload, "run-2")
        odd = {"Nats-Msg-Id": "run-3", "Busbridge-Origin": " padded"}  # nats-py strips it
        run = [
            ("errbus.error.T.error.r1", b'{"n":1}', "_INBOX.r.1", plain),
            (built.subject, built.payload, "_INBOX.r.2", built.headers),
            ("errbus.error.T.error.r1", b'{"n":3}', "_INBOX.r.3", odd),
            ("errbus.error.T.error.r1", b'{"n":4}', "_INBOX.r.4", {"Nats-Msg-Id": "run-4"}),
        ]
        for subject, payload, reply, headers in run:  # what nats-py writes, one by one
            await nc.publish(subject, payload, reply=reply, headers=headers)
        expected, sent[:] = b"".join(sent), []
        await link.publish_many(run)
        # raw pieces of messages 1-2, nats-py's own write for 3, the raw piece of 4
        assert len(sent) == 3 and b"".join(sent) == expected
        del sent[:]
        refused = [
            ("errbus.error.T.error.r1", b"{}", "_INBOX.r.5", {"Nats-Msg-Id": "run-5"}),
            ("errbus a b", b"{}", "_INBOX.r.6", {"Nats-Msg-Id": "run-6"}),
            ("errbus.error.T.error.r1", b"{}", "_INBOX.r.7", {"Nats-Msg-Id": "run-7"}),
        ]
        for _ in range(2):  # a refused subject is refused again (never taken as checked)
            with pytest.raises(RunCut) as cut:
                await link.publish_many(refused)
            assert cut.value.queued == 1 and isinstance(cut.value.cause, PublishRefused)
        assert len(sent) == 2 and all(b"run-5" in s and b"run-7" not in s for s in sent)
    stored = await fetch_all(nats_server.url, "ERRBUS", raw=True)
    assert [m.headers["Nats-Msg-Id"] for m in stored] == [f"run-{n}" for n in (1, 2, 3, 4, 5)]
    assert stored[2].headers["Busbridge-Origin"] == "padded"
