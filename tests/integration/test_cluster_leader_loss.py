"""A 3-node JetStream cluster (R3 stream) loses its stream leader under load: the
bridge retries through the election and every event is stored once, in order."""

from __future__ import annotations

from pathlib import Path

import anyio
import nats
import nats.errors
import nats.js.errors
import pytest

from loadtest.producer import SteadyProducer
from tests.support.bridge import make_config, running_bridge
from tests.support.nats_server import running_cluster
from tests.support.order import assert_exactly_once_in_order
from tests.support.stream import fetch_all, wait_for_count

pytestmark = pytest.mark.integration


async def _stream_leader(url: str) -> str:
    nc = await nats.connect(url)
    try:
        with anyio.fail_after(20):
            while True:
                try:
                    info = await nc.jetstream(timeout=1).stream_info("ERRBUS")
                    if info.cluster and info.cluster.leader:
                        return info.cluster.leader
                except (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError):
                    pass  # election in progress
                await anyio.sleep(0.2)
    finally:
        await nc.close()


async def test_stream_leader_killed_under_load(tmp_path: Path) -> None:
    with running_cluster(tmp_path / "cluster") as servers:
        urls = [s.url for s in servers]
        cfg = make_config(
            urls[0],
            tmp_path,
            nats={"servers": urls, "reconnect_wait_secs": 0.2},
            stream={"replicas": 3},
            publish={"ack_timeout_secs": 1.0, "retry_max_secs": 0.5},
        )
        async with running_bridge(cfg) as bridge:
            producer = SteadyProducer(bridge.zmq_endpoints[0], publishers=3, rate=600)
            await anyio.to_thread.run_sync(producer.start)
            await anyio.sleep(2.0)
            leader = await _stream_leader(urls[0])
            victim = next(s for s in servers if s.server_name == leader)
            victim.kill()
            survivors = [s.url for s in servers if s is not victim]
            await anyio.sleep(5.0)
            assert await _stream_leader(survivors[0]) != leader
            await anyio.to_thread.run_sync(producer.stop)
            expected = {f"p{p:03d}-{n:09d}" for p, ns in enumerate(producer.sent) for n in ns}
            assert await wait_for_count(
                survivors[0], "ERRBUS", len(expected), timeout_secs=60
            ) == len(expected)
        assert_exactly_once_in_order(await fetch_all(survivors[0], "ERRBUS"), expected)
