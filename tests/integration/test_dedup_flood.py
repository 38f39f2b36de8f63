"""Dedup and flood control against a real bridge, real ZMQ and a real nats-server."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import nats
import pytest
import zmq

from bridge.adapters.nats_server import NatsServerProcess
from contracts.codec import encode
from contracts.messages import ErrorEvent, FloodEnded, FloodStarted, FloodSummary, Severity
from loadtest.producer import envelope
from loadtest.replay import connect_publishers
from tests.support.bridge import make_config, running_bridge
from tests.support.http import http_get
from tests.support.stream import fetch_all, wait_for_count

pytestmark = pytest.mark.integration

ID = "7d7c0c8e-6a39-4f0e-9a53-5e9f1b7c2a11"
PC2 = (
    b"PC2_ERROR:PC2_SERVICE:"
    + json.dumps(
        {
            "message_type": "error_report",
            "source": "cache_manager",
            "source_machine": "PC2",
            "timestamp": "2026-11-21T08:02:19.319939",
            "error_data": {
                "error_id": ID,
                "error_type": "vram_exhausted",
                "severity": "critical",
                "category": "pc2_service",
                "details": None,
                "machine_context": {
                    "host": "pc2",
                    "current_machine": "mainpc",
                    "runtime_env": "dev",
                },
            },
        }
    ).encode()
)
CROSS = (
    b"CROSS_MACHINE_ERROR:PC2:"
    + PC2[len(b"PC2_ERROR:PC2_SERVICE:") : -1]
    + b', "cross_machine_alert": true, "originating_machine": "PC2"}'
)


async def _send(endpoint: str, frames: list[bytes], publishers: int = 1) -> None:
    def send() -> None:
        with zmq.Context() as ctx:
            socks = connect_publishers(ctx, endpoint, publishers)
            for k, frame in enumerate(frames):
                socks[k % publishers].send(frame)
            for s in socks:
                s.close(linger=30_000)

    await anyio.to_thread.run_sync(send)


async def _metric(bridge, name: str) -> float:
    _, text = await http_get(f"http://127.0.0.1:{bridge.admin_port}/metrics")
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


@pytest.mark.parametrize("bridge_dedup", [True, False], ids=["bridge-window", "jetstream-window"])
async def test_pc2_pair_is_stored_once(
    nats_server: NatsServerProcess, tmp_path: Path, bridge_dedup: bool
) -> None:
    cfg = make_config(nats_server.url, tmp_path, dedup={"enabled": bridge_dedup})
    async with running_bridge(cfg) as bridge:
        await _send(bridge.zmq_endpoints[0], [PC2, CROSS])
        await anyio.sleep(1.0)
        by = "bridge" if bridge_dedup else "jetstream"
        assert await _metric(bridge, f'busbridge_duplicates_total{{by="{by}"}}') == 1
    [stored] = await fetch_all(nats_server.url, "ERRBUS")
    assert stored.msg.event_id == ID and stored.msg.severity is Severity.CRITICAL


@pytest.mark.parametrize("native_first", [True, False], ids=["native-first", "zmq-first"])
async def test_agent_publishing_to_zmq_and_natively_is_stored_once(
    nats_server: NatsServerProcess, tmp_path: Path, native_first: bool
) -> None:
    from datetime import UTC, datetime

    native = ErrorEvent(
        event_id=ID,
        occurred_at=None,
        received_at=datetime.now(UTC),
        machine="PC2",
        source="cache_manager",
        severity=Severity.CRITICAL,
        error_type="vram_exhausted",
        message="native copy",
    )
    async with running_bridge(make_config(nats_server.url, tmp_path)) as bridge:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        if not native_first:
            await _send(bridge.zmq_endpoints[0], [PC2])
            await wait_for_count(nats_server.url, "ERRBUS", 1)
        ack = await js.publish(
            "errbus.error.PC2.critical.cache_manager", encode(native), headers={"Nats-Msg-Id": ID}
        )
        assert bool(ack.duplicate) is (not native_first)
        if native_first:
            await _send(bridge.zmq_endpoints[0], [PC2])
            await anyio.sleep(1.0)
            assert await _metric(bridge, 'busbridge_duplicates_total{by="jetstream"}') == 1
        await nc.close()
    assert len(await fetch_all(nats_server.url, "ERRBUS")) == 1


async def test_storm_of_100k_stores_n_plus_summaries_that_add_up_and_every_critical(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    sent, criticals = 100_000, 500
    frames = [
        envelope(0, n, "critical" if n % (sent // criticals) == 0 else "error", pad=0)
        for n in range(sent)
    ]
    cfg = make_config(
        nats_server.url, tmp_path, flood={"enabled": True, "summary_interval_secs": 1.0}
    )
    async with running_bridge(cfg) as bridge:
        await _send(bridge.zmq_endpoints[0], frames)
        with anyio.fail_after(60):
            while bridge.runner.received < sent:
                await anyio.sleep(0.1)
        assert await _metric(bridge, "busbridge_floods_active") <= 1
    total = await wait_for_count(nats_server.url, "ERRBUS", 1, settle_secs=1.0)
    stored = await fetch_all(nats_server.url, "ERRBUS")
    assert len(stored) == total
    events = [m.msg for m in stored if isinstance(m.msg, ErrorEvent)]
    summaries = [m.msg for m in stored if isinstance(m.msg, FloodSummary)]
    started = [m.msg for m in stored if isinstance(m.msg, FloodStarted)]
    ended = [m.msg for m in stored if isinstance(m.msg, FloodEnded)]
    ordinary = [e for e in events if e.severity is not Severity.CRITICAL]
    rule_threshold = started[0].threshold
    assert (
        len([e for e in events if e.severity is Severity.CRITICAL]) == criticals
    )  # never suppressed
    assert (
        len(ordinary) == rule_threshold == 5
    )  # memory_scheduler_timeout: the timeout rule, 5 per 30 s
    assert len(started) == 1 and len(ended) == 1
    assert (
        len(ordinary) + sum(s.suppressed for s in summaries) == sent - criticals
    )  # adds up exactly
    assert ended[0].suppressed_total == sent - criticals - rule_threshold
    assert len(stored) < 600 + len(summaries)
