"""The throughput baselines and the ``throughput`` scenario, against real nats-servers and real
ZMQ sockets, on tiny message sets (counts and content, never speed)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from bridge.adapters.nats_server import NatsServerProcess
from contracts.messages import ErrorEvent
from loadtest.baselines import (
    BridgeEncoder,
    ThroughputRun,
    ZmqSender,
    create_stream,
    message_frames,
    wait_stored,
)
from loadtest.ceiling import run_ceiling
from loadtest.naive_bridge import NaiveBridgeProcess
from loadtest.scenarios import ScenarioOptions, run_scenario
from loadtest.scenarios.throughput import _lossless_check, _sustained_report
from loadtest.traffic import token
from loadtest.workload import Workload
from tests.support.stream import fetch_all

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

COUNT, PUBLISHERS = 1200, 3


def _expected_ids(count: int = COUNT, publishers: int = PUBLISHERS) -> set[str]:
    return {token(k % publishers, k // publishers) for k in range(count)}


def test_message_set_is_one_event_per_token_with_the_bridge_encoding() -> None:
    encoder = BridgeEncoder()
    outs = [encoder.encode(frames) for _, frames in message_frames(6, 2)]
    assert [o.msg_id for o in outs] == [token(k % 2, k // 2) for k in range(6)]
    assert {o.kind for o in outs} == {"error_event"}
    assert outs[1].subject == "errbus.error.LoadPC.error.Agent001"
    assert outs[0].headers["Nats-Msg-Id"] == outs[0].msg_id


async def test_ceiling_stores_every_message_once(nats_server: NatsServerProcess) -> None:
    await create_stream(nats_server.url)
    run = await anyio.to_thread.run_sync(
        lambda: run_ceiling(nats_server.url, COUNT, PUBLISHERS, window=64)
    )
    assert (run.target, run.sent, run.stored, run.lossless) == ("ceiling", COUNT, COUNT, True)
    assert run.extra["acked_stored"] == COUNT and run.extra["ack_errors"] == 0
    stored = await fetch_all(nats_server.url, "ERRBUS")
    assert {m.headers["Nats-Msg-Id"] for m in stored} == _expected_ids()
    assert all(isinstance(m.msg, ErrorEvent) for m in stored)


async def test_naive_bridge_stores_every_zmq_message_once(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    await create_stream(nats_server.url)
    naive = NaiveBridgeProcess(tmp_path / "naive", nats_server.url)
    await anyio.to_thread.run_sync(naive.start)
    try:
        sender = ZmqSender(naive.endpoint, COUNT, PUBLISHERS)
        await anyio.to_thread.run_sync(sender.start)
        try:
            sender.go()
            state = await wait_stored(nats_server.url, COUNT, timeout_secs=60)
            first_ns, last_ns = await anyio.to_thread.run_sync(sender.wait, 30.0)
        finally:
            await anyio.to_thread.run_sync(sender.stop)
    finally:
        stats = await anyio.to_thread.run_sync(naive.stop)
    assert state.messages == COUNT and sender.sent == COUNT
    assert state.last_ts_ns >= first_ns > 0 and last_ns >= first_ns
    assert stats == {"received": COUNT, "published": COUNT, "retries": 0}
    stored = await fetch_all(nats_server.url, "ERRBUS")
    assert [m.headers["Nats-Msg-Id"] for m in stored if m.subject.endswith("Agent001")] == [
        token(1, n) for n in range(COUNT // PUBLISHERS)
    ]  # one awaited publish at a time: per-publisher order kept
    assert {m.headers["Nats-Msg-Id"] for m in stored} == _expected_ids()


async def test_throughput_scenario_runs_all_three_targets_losslessly(tmp_path: Path) -> None:
    options = ScenarioOptions(
        workload=Workload(publishers=PUBLISHERS), workdir=tmp_path, params={"messages": COUNT}
    )
    seen: list[str] = []
    result = await run_scenario("throughput", options, lambda stage, counters: seen.append(stage))
    assert result.passed, result.checks
    runs = result.extra["runs"]
    assert [r["target"] for r in runs] == ["ceiling", "naive", "busbridge"]
    assert all(r["stored"] == r["sent"] == COUNT and r["throughput_per_sec"] > 0 for r in runs)
    assert runs[2]["extra"]["dropped"] == 0
    assert set(result.extra["ratios"]) == {"busbridge/ceiling", "busbridge/naive"}
    assert any("busbridge" in s for s in seen)
    assert not list(tmp_path.glob("run1-*"))  # scratch dirs removed


async def test_throughput_sustained_mode_keeps_up_at_a_low_rate(tmp_path: Path) -> None:
    workload = Workload(rate_per_sec=1000.0, duration_secs=2.0, publishers=2)
    options = ScenarioOptions(
        workload=workload, workdir=tmp_path, params={"mode": "sustained", "backlog_bound_secs": 2.0}
    )
    result = await run_scenario("throughput", options)
    assert result.passed, result.checks
    assert {c.name for c in result.checks} == {"lossless", "backlog_bounded"}
    assert result.extra["run"]["stored"] == 2000 and result.extra["samples"]


def test_checks_fail_on_loss_and_on_a_growing_backlog() -> None:
    lossy = ThroughputRun(
        target="busbridge",
        sent=10,
        stored=9,
        elapsed_secs=1.0,
        throughput_per_sec=9.0,
        lossless=False,
    )
    assert not _lossless_check(lossy, 0).ok
    growing = [
        (0.5 * i, 500 * i, 400 * i) for i in range(1, 20)
    ]  # stored falls 100 msgs further behind every sample
    run = ThroughputRun(
        target="busbridge",
        sent=10_000,
        stored=10_000,
        elapsed_secs=10.0,
        throughput_per_sec=1000.0,
        lossless=True,
    )
    _, checks = _sustained_report(growing, run, 0.0, bound=1000.0)
    assert {c.name: c.ok for c in checks} == {"lossless": True, "backlog_bounded": False}
    _, checks = _sustained_report(growing[:5], run, 3.0, bound=1000.0)
    assert {c.name: c.ok for c in checks} == {"lossless": False, "backlog_bounded": True}
