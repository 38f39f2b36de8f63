"""The nats-server stops answering without closing the connection (SIGSTOPped here: no FIN, no
RST, no data, like a hung or powered-off host): the bridge notices by its unanswered PINGs
(``nats.ping_interval_secs`` x ``max_outstanding_pings``), spools meanwhile, reconnects once the
server answers again, and every event is stored once, in order. With nats-py's defaults
(120 s x 2) it sat on the dead connection for minutes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import pytest

from bridge.adapters.nats_server import NatsServerProcess
from loadtest.producer import SteadyProducer
from tests.support.bridge import make_config, running_bridge
from tests.support.order import assert_exactly_once_in_order
from tests.support.stream import fetch_all, wait_for_count

pytestmark = [
    pytest.mark.integration,
    # nats-py drops the stale connection's StreamWriter without closing it (the peer is silent)
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <function StreamWriter.__del__:pytest.PytestUnraisableExceptionWarning"
    ),
]


async def test_a_silent_server_is_noticed_and_nothing_is_lost(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    assert nats_server.pid is not None
    cfg = make_config(
        nats_server.url,
        tmp_path,
        nats={
            "reconnect_wait_secs": 0.2,
            "connect_timeout_secs": 1.0,
            "ping_interval_secs": 0.5,
            "max_outstanding_pings": 2,
        },
        publish={"ack_timeout_secs": 1.0, "retry_max_secs": 0.5},
    )
    async with running_bridge(cfg) as bridge:
        assert bridge.link is not None and bridge.queue is not None
        producer = SteadyProducer(bridge.zmq_endpoints[0], publishers=2, rate=200)
        await anyio.to_thread.run_sync(producer.start)
        stopped = False
        try:
            await anyio.sleep(1.0)
            os.kill(nats_server.pid, signal.SIGSTOP)
            stopped = True
            with anyio.fail_after(
                8
            ):  # 0.5 s x (2 + 1) plus scheduling; nats-py's defaults: minutes
                while bridge.link.connected:
                    await anyio.sleep(0.05)
            await anyio.sleep(1.0)
            assert bridge.queue.rows > 0  # the backlog goes to disk meanwhile
        finally:
            if stopped:
                os.kill(nats_server.pid, signal.SIGCONT)
        try:
            with anyio.fail_after(20):
                while not bridge.link.connected:
                    await anyio.sleep(0.05)
            await anyio.sleep(1.0)
        finally:
            await anyio.to_thread.run_sync(producer.stop)
        expected = {f"p{p:03d}-{n:09d}" for p, ns in enumerate(producer.sent) for n in ns}
        assert await wait_for_count(
            nats_server.url, "ERRBUS", len(expected), timeout_secs=30
        ) >= len(expected)
    assert_exactly_once_in_order(await fetch_all(nats_server.url, "ERRBUS"), expected)
