"""Durable spool against a real nats-server and real ZMQ: outages, a missing stream,
a full spool. Every accepted message ends stored exactly once (in per-publisher
order) or evicted and counted; nothing is lost silently."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import nats
import pytest

from bridge.adapters.jetstream import stream_config_for
from bridge.adapters.nats_server import NatsServerProcess
from contracts.messages import SpoolEvicted
from loadtest.producer import SteadyProducer, parse_id
from tests.support.bridge import make_config, running_bridge
from tests.support.http import http_get
from tests.support.order import assert_exactly_once_in_order
from tests.support.stream import fetch_all, wait_for_count

pytestmark = pytest.mark.integration

FAST = {
    "nats": {"reconnect_wait_secs": 0.2},
    "publish": {"ack_timeout_secs": 1.0, "retry_max_secs": 0.5, "max_pending": 500},
}


def _ids(producer: SteadyProducer) -> set[str]:
    return {f"p{p:03d}-{n:09d}" for p, sent in enumerate(producer.sent) for n in sent}


async def _start_producer(endpoint: str, **kw) -> SteadyProducer:
    producer = SteadyProducer(endpoint, **kw)
    await anyio.to_thread.run_sync(producer.start)
    return producer


async def test_nats_outage_of_10s_loses_nothing_and_keeps_order(tmp_path: Path) -> None:
    store = tmp_path / "nats"
    server = NatsServerProcess(store)
    server.start()
    try:
        cfg = make_config(server.url, tmp_path, **FAST)
        async with running_bridge(cfg) as bridge:
            producer = await _start_producer(bridge.zmq_endpoints[0], publishers=4, rate=400)
            await anyio.sleep(1.5)
            await anyio.to_thread.run_sync(server.stop)
            await anyio.sleep(10.5)
            assert bridge.queue.rows > 1000  # the backlog is on disk
            status, body = await http_get(f"http://127.0.0.1:{bridge.admin_port}/readyz")
            assert status == 503 and json.loads(body)["status"] == "degraded"
            server = NatsServerProcess(store, port=server.port)
            await anyio.to_thread.run_sync(server.start)
            await anyio.sleep(1.5)
            await anyio.to_thread.run_sync(producer.stop)
            expected = _ids(producer)
            assert await wait_for_count(
                server.url, "ERRBUS", len(expected), timeout_secs=60
            ) == len(expected)
        assert_exactly_once_in_order(await fetch_all(server.url, "ERRBUS"), expected)
    finally:
        server.stop()


async def test_stream_missing_for_a_while_then_recreated(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    cfg = make_config(nats_server.url, tmp_path, **FAST)
    async with running_bridge(cfg) as bridge:
        producer = await _start_producer(bridge.zmq_endpoints[0], publishers=2, rate=300)
        await anyio.sleep(1.0)
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        await js.delete_stream("ERRBUS")
        cut = [len(s) for s in producer.sent]  # everything sent from here on must be stored
        await anyio.sleep(3.0)
        await js.add_stream(stream_config_for(cfg.stream))
        await anyio.sleep(1.5)
        await anyio.to_thread.run_sync(producer.stop)
        await nc.close()
        after = {
            f"p{p:03d}-{n:09d}" for p, sent in enumerate(producer.sent) for n in sent if n >= cut[p]
        }
        await wait_for_count(nats_server.url, "ERRBUS", len(after), timeout_secs=30)
    stored = await fetch_all(nats_server.url, "ERRBUS")
    ids = {m.headers["Nats-Msg-Id"] for m in stored}
    assert after <= ids
    assert_exactly_once_in_order(stored, ids)
    assert min(parse_id(i)[1] for i in ids if parse_id(i)[0] == 0) <= cut[0]


async def test_full_spool_evicts_lowest_severities_first_and_accounts_for_everything(
    tmp_path: Path,
) -> None:
    store = tmp_path / "nats"
    server = NatsServerProcess(store)
    server.start()
    try:
        cfg = make_config(  # a small in-memory window, so most of the backlog is on disk
            server.url,
            tmp_path,
            nats=FAST["nats"],
            publish={
                "ack_timeout_secs": 1.0,
                "retry_max_secs": 0.5,
                "max_pending": 100,
                "max_in_flight": 64,
            },
            spool={"max_bytes": 1024 * 1024, "eviction_summary_interval_secs": 0.5},
        )
        async with running_bridge(cfg) as bridge:
            await anyio.to_thread.run_sync(server.stop)
            producer = await _start_producer(
                bridge.zmq_endpoints[0],
                publishers=2,
                rate=3000,
                severities=("low", "medium", "high", "critical"),
            )
            await anyio.sleep(1.0)  # ~3000 messages of ~560 B: about 1.6x what 1 MiB holds
            await anyio.to_thread.run_sync(producer.stop)
            await anyio.sleep(2.0)  # maintenance tick: eviction summary appended
            assert (await http_get(f"http://127.0.0.1:{bridge.admin_port}/healthz"))[0] == 200
            _, metrics = await http_get(f"http://127.0.0.1:{bridge.admin_port}/metrics")
            evicted = _evictions(metrics)
            server = NatsServerProcess(store, port=server.port)
            await anyio.to_thread.run_sync(server.start)
            sent = producer.sent_count
            await wait_for_count(
                server.url, "ERRBUS", sent - sum(evicted.values()) + 1, timeout_secs=60
            )
        stored = await fetch_all(server.url, "ERRBUS")
    finally:
        server.stop()
    summaries = [m.msg for m in stored if isinstance(m.msg, SpoolEvicted)]
    events = [m for m in stored if not isinstance(m.msg, SpoolEvicted)]
    assert evicted["info"] > 0 and evicted["critical"] == 0
    # lowest first: severities cycle per message, so whole levels differ by a message or so
    assert evicted["info"] >= evicted["error"] and evicted["warning"] >= evicted["error"]
    assert len(events) + sum(evicted.values()) == sent  # every message: stored or evicted
    assert {m.msg.severity.value for m in events} >= {"critical", "error"}
    assert sum(sum(s.by_severity.values()) for s in summaries) == sum(evicted.values())
    assert_exactly_once_in_order(events, {m.headers["Nats-Msg-Id"] for m in events})


def _evictions(metrics: str) -> dict[str, float]:
    out = {"info": 0.0, "warning": 0.0, "error": 0.0, "critical": 0.0, "debug": 0.0}
    for line in metrics.splitlines():
        if line.startswith("busbridge_spool_evictions_total{"):
            severity = line.split('severity="')[1].split('"')[0]
            out[severity] += float(line.rsplit(" ", 1)[1])
    return out


async def test_nats_unreachable_at_boot_is_absorbed_by_the_spool(tmp_path: Path) -> None:
    from loadtest.harness import free_port

    port = free_port()
    cfg = make_config(f"nats://127.0.0.1:{port}", tmp_path, **FAST)
    async with running_bridge(cfg, wait_nats=False) as bridge:
        producer = await _start_producer(
            bridge.zmq_endpoints[0], publishers=2, rate=300
        )  # ZMQ is bound
        await anyio.sleep(2.0)
        assert bridge.queue.rows > 300 and not bridge.nats_ready.is_set()
        server = NatsServerProcess(tmp_path / "nats", port=port)
        await anyio.to_thread.run_sync(server.start)
        try:
            await anyio.sleep(1.0)
            await anyio.to_thread.run_sync(producer.stop)
            expected = _ids(producer)
            assert await wait_for_count(
                server.url, "ERRBUS", len(expected), timeout_secs=30
            ) == len(expected)
        finally:
            stored = await fetch_all(server.url, "ERRBUS")
            server.stop()
    assert_exactly_once_in_order(stored, expected)
