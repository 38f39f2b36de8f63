"""Ingest socket modes, the publisher monitor, /readyz honesty and port release, on real sockets."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
import zmq

from bridge.adapters.nats_server import NatsServerProcess
from tests.support.bridge import make_config, running_bridge
from tests.support.http import http_get
from tests.support.stream import fetch_all, wait_for_count

pytestmark = pytest.mark.integration

D1 = b'ERROR:{"message_type": "error_report", "source": "SystemDigitalTwin", "timestamp": "2026-11-21T08:02:16.503872", "error_data": {"error_id": "00000000-0000-4000-8000-000000000001", "error_type": "x", "severity": "high", "details": null}}'


async def _until(predicate, timeout_secs: float = 10.0) -> None:
    with anyio.fail_after(timeout_secs):
        while not await predicate():
            await anyio.sleep(0.05)


async def test_connect_mode_reads_from_a_publisher_that_binds(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)  # a pooled-style publisher that binds
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    cfg = make_config(
        nats_server.url,
        tmp_path,
        zmq={"mode": "connect", "connect_endpoints": [f"tcp://127.0.0.1:{port}"]},
    )
    try:
        async with running_bridge(cfg):
            assert await anyio.to_thread.run_sync(pub.poll, 10_000) and pub.recv() == b"\x01"
            pub.send(D1)
            assert await wait_for_count(nats_server.url, "ERRBUS", 1) == 1
    finally:
        pub.close(linger=0)
        ctx.term()
    [stored] = await fetch_all(nats_server.url, "ERRBUS")
    assert stored.msg.event_id == "00000000-0000-4000-8000-000000000001"
    assert stored.subject == "errbus.error.TestPC.error.SystemDigitalTwin"


async def test_monitor_counts_connected_publishers(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    async with running_bridge(make_config(nats_server.url, tmp_path)) as bridge:
        ctx = zmq.Context()
        socks = [ctx.socket(zmq.PUB) for _ in range(3)]
        wrong = ctx.socket(zmq.REQ)  # a wrong socket type fails the handshake and is not counted

        async def connected(n: int) -> bool:
            _, text = await http_get(f"http://127.0.0.1:{bridge.admin_port}/metrics")
            return f"busbridge_zmq_publishers_connected {float(n)}" in text

        try:
            for s in [*socks, wrong]:
                s.connect(bridge.zmq_endpoints[0])
            await _until(lambda: connected(3))
            socks[0].close(linger=0)
            await _until(lambda: connected(2))
        finally:
            for s in [*socks, wrong]:
                s.close(linger=0)
            ctx.term()


async def test_readyz_is_honest_about_nats(tmp_path: Path) -> None:
    server = NatsServerProcess(tmp_path / "nats")
    server.start()
    try:
        cfg = make_config(
            server.url, tmp_path, admin={"ready_max_age_secs": 1.0, "probe_interval_secs": 0.2}
        )
        async with running_bridge(cfg) as bridge:
            url = f"http://127.0.0.1:{bridge.admin_port}/readyz"
            await _until(lambda: _status_is(url, 200))
            server.stop()
            await _until(lambda: _status_is(url, 503))
            _status, body = await http_get(url)
            assert "nats_disconnected" in json.loads(body)["reasons"]
            assert (await http_get(f"http://127.0.0.1:{bridge.admin_port}/healthz"))[0] == 200
    finally:
        server.stop()


async def _status_is(url: str, status: int) -> bool:
    return (await http_get(url))[0] == status


async def test_port_is_released_on_stop(nats_server: NatsServerProcess, tmp_path: Path) -> None:
    async with running_bridge(make_config(nats_server.url, tmp_path)) as bridge:
        endpoint = bridge.zmq_endpoints[0]
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    try:
        sock.bind(endpoint)  # EADDRINUSE if the bridge still held it
    finally:
        sock.close(linger=0)
        ctx.term()
