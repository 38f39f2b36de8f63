"""Fleet health end to end: two bridges as two machines on one nats-server, each probing its own
fake legacy agents (MainPC schema on one, PC2 schema on the other); ``busbridge health --json``
on either machine shows both machines' agents and both bridges; a cleanly stopped bridge shows
as stopped (its farewell heartbeat), its agents turn stale; heartbeats survive a NATS outage."""

from __future__ import annotations

import json
import signal
import subprocess
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import nats
import pytest

from bridge.adapters.nats_server import NatsServerProcess
from contracts.messages import BridgeHeartbeat, HealthReport
from loadtest.harness import BridgeProcess
from tests.support.bridge import make_config, running_bridge
from tests.support.fake_agents import FakeAgents, base_agent_reply, http, hung, zmq_agent
from tests.support.process import BUSBRIDGE
from tests.support.stream import fetch_all

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

HEARTBEAT_SECS = 0.5
PROBE_SECS = 1.0
TTL_SECS = 30.0
WP07 = b'{"agent_name": "EmotionEngine", "health_metrics": {"status": "healthy"}, "schema": "WP-07-unified-health"}'

MAINPC_EXPECTED = {
    "SystemDigitalTwin": "healthy",  # BaseAgent "ok" over ZMQ REP
    "ModelManagerSuite": "degraded",  # BaseAgent "degraded"
    "EmotionEngine": "healthy",  # WP-07 (plain-string request)
    "STTService": "unhealthy",  # never answers: timeout
    "StreamingTTSAgent": "unknown",  # garbage
}
PC2_EXPECTED = {
    "TieredResponder": "healthy",  # {"status": "healthy"}
    "AsyncProcessor": "healthy",  # BaseAgent HTTP on health_check_port + 1
    "CacheManager": "unhealthy",  # HTTP 503 {"status": "unhealthy"}
    "ResourceManager": "degraded",  # ErrorBusService {"status": "success", "data": {"status": "degraded"}}
    "AdvancedRouter": "unhealthy",  # timeout
    "VisionProcessingAgent": "unknown",  # garbage
}


def _mainpc_agents() -> list:
    return [
        zmq_agent("SystemDigitalTwin", base_agent_reply("ok", "healthy")),
        zmq_agent("ModelManagerSuite", base_agent_reply("degraded", "degraded")),
        zmq_agent(
            "EmotionEngine",
            lambda r: WP07 if r == b"health_check" else b"Unknown health request",
            "emotion_system",
        ),
        hung("STTService", "speech_services"),
        zmq_agent("StreamingTTSAgent", b"\xff\xfe<<not json>>", "audio_interface"),
    ]


def _pc2_agents() -> list:
    return [
        zmq_agent("TieredResponder", b'{"status": "healthy"}'),
        http("AsyncProcessor", 200, base_agent_reply("ok", "healthy")),
        http("CacheManager", 503, b'{"status": "unhealthy", "error": "redis"}'),
        zmq_agent("ResourceManager", b'{"status": "success", "data": {"status": "degraded"}}'),
        hung("AdvancedRouter"),
        zmq_agent("VisionProcessingAgent", b"Traceback (most recent call last): ..."),
    ]


#: the bridge replaces CentralErrorBus on 7150: listed first in the PC2 file, never probed
CENTRAL_ERROR_BUS = """  - name: CentralErrorBus
    script_path: pc2_code/agents/ForPC2/central_error_bus.py
    host: 0.0.0.0
    port: ${PORT_OFFSET}+7150
    health_check_port: ${PORT_OFFSET}+8150
    required: true
"""


def _health_section(startup_config: Path | None, offset: int) -> dict[str, Any]:
    return {
        "enabled": True,
        "heartbeat_interval_secs": HEARTBEAT_SECS,
        "kv_ttl_secs": TTL_SECS,
        "startup_config": str(startup_config) if startup_config else None,
        "port_offset": offset,
        "probe_interval_secs": PROBE_SECS,
        "probe_timeout_secs": 0.4,
        "stale_after_intervals": 3,
    }


def _viewer_config(tmp_path: Path, machine: str, url: str) -> Path:
    path = tmp_path / f"view-{machine}.yaml"
    path.write_text(f"machine: {machine}\nnats: {{servers: ['{url}']}}\n")
    return path


async def _health_json(config: Path, *extra: str) -> list[dict[str, Any]]:
    result = await anyio.run_process(
        [BUSBRIDGE, "health", "--json", "-c", str(config), *extra], check=False
    )
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


def _view(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r["machine"], r["kind"], r["name"]): r for r in rows}


async def _until_view(config: Path, ok, timeout_secs: float = 30.0) -> dict:
    view: dict = {}
    with anyio.move_on_after(timeout_secs):
        while True:
            view = _view(await _health_json(config))
            if ok(view):
                return view
            await anyio.sleep(0.3)
    return view  # the caller's asserts say what is missing


def _whole_fleet(view: dict) -> bool:
    agents = {(m, n): r["status"] for (m, k, n), r in view.items() if k == "agent"}
    want = {("mainpc", n): s for n, s in MAINPC_EXPECTED.items()} | {
        ("pc2", n): s for n, s in PC2_EXPECTED.items()
    }
    return (
        agents == want and {("mainpc", "bridge", "mainpc"), ("pc2", "bridge", "pc2")} <= view.keys()
    )


async def test_two_machines_see_the_whole_fleet_and_a_stopped_bridge(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    url = nats_server.url
    async with FakeAgents(_mainpc_agents()) as main_agents, FakeAgents(_pc2_agents()) as pc2_agents:
        main_file, pc2_file = (
            tmp_path / "mainpc_startup_config.yaml",
            tmp_path / "pc2_startup_config.yaml",
        )
        main_file.write_text(main_agents.mainpc_yaml())
        pc2_file.write_text(pc2_agents.pc2_yaml(extra_services=CENTRAL_ERROR_BUS))
        main_cfg = make_config(
            url,
            tmp_path / "mainpc",
            machine="mainpc",
            health=_health_section(main_file, main_agents.offset),
        )
        pc2_cfg = make_config(
            url,
            tmp_path / "pc2",
            machine="pc2",
            health=_health_section(pc2_file, pc2_agents.offset),
        )
        view_main, view_pc2 = (
            _viewer_config(tmp_path, "mainpc", url),
            _viewer_config(tmp_path, "pc2", url),
        )

        async with AsyncExitStack() as stack:
            main_bridge = await stack.enter_async_context(running_bridge(main_cfg))
            pc2_stack = await stack.enter_async_context(AsyncExitStack())
            await pc2_stack.enter_async_context(running_bridge(pc2_cfg))

            # both machines' agents and both bridges, the same on either machine
            for config in (view_main, view_pc2):
                view = await _until_view(config, _whole_fleet)
                agents = {(m, n): r["status"] for (m, k, n), r in view.items() if k == "agent"}
                assert agents == {("mainpc", n): s for n, s in MAINPC_EXPECTED.items()} | {
                    ("pc2", n): s for n, s in PC2_EXPECTED.items()
                }
                for machine in ("mainpc", "pc2"):
                    bridge_row = view[(machine, "bridge", machine)]
                    assert bridge_row["status"] == "healthy" and not bridge_row["stale"]
                    assert bridge_row["report"]["phase"] and bridge_row["report"]["version"]
                assert not any(r["stale"] for r in view.values())
                assert (
                    "pc2",
                    "agent",
                    "CentralErrorBus",
                ) not in view  # excluded: the bridge holds 7150
            assert view[("pc2", "agent", "AsyncProcessor")]["report"]["method"] == "http_next_port"
            assert view[("pc2", "agent", "CacheManager")]["report"]["http_status"] == 503
            assert view[("mainpc", "agent", "STTService")]["report"]["reason"] == "timeout"
            assert (
                view[("mainpc", "agent", "SystemDigitalTwin")]["report"]["group"]
                == "foundation_services"
            )
            beat = view[("pc2", "bridge", "pc2")]["report"]
            assert beat["agents_probed"] == len(PC2_EXPECTED) and beat["nats_connected"] is True

            # --machine keeps one machine; the table form renders every row
            only_pc2 = await _health_json(view_main, "--machine", "pc2")
            assert {r["machine"] for r in only_pc2} == {"pc2"} and len(only_pc2) == len(
                PC2_EXPECTED
            ) + 1
            table = await anyio.run_process([BUSBRIDGE, "health", "-c", str(view_main)], check=True)
            lines = table.stdout.decode().splitlines()
            assert lines[0].split() == ["MACHINE", "KIND", "NAME", "STATUS", "AGE", "DETAIL"]
            assert len(lines) == 1 + len(MAINPC_EXPECTED) + len(PC2_EXPECTED) + 2
            assert "\x1b[" not in table.stdout.decode()  # not a terminal: no colour

            # stop the PC2 bridge cleanly: its farewell heartbeat makes it "stopped" at once, never stale
            await pc2_stack.aclose()

            def pc2_stopped(v: dict) -> bool:
                return v.get(("pc2", "bridge", "pc2"), {}).get("stopped") is True

            view = await _until_view(view_main, pc2_stopped, timeout_secs=10)
            assert pc2_stopped(view), "the cleanly stopped bridge never showed stopped"
            row = view[("pc2", "bridge", "pc2")]
            assert row["report"]["stopping"] is True and not row["stale"]
            assert not view[("mainpc", "bridge", "mainpc")]["stale"]
            view = await _until_view(
                view_main,
                lambda v: all(
                    r["stale"] for (m, k, _), r in v.items() if m == "pc2" and k == "agent"
                ),
            )
            assert all(
                r["stale"] for (m, k, _), r in view.items() if m == "pc2" and k == "agent"
            )  # its agents: no longer probed
            assert (
                view[("pc2", "bridge", "pc2")]["stopped"]
                and not view[("pc2", "bridge", "pc2")]["stale"]
            )
            assert not any(r["stale"] for (m, _, _), r in view.items() if m == "mainpc")
            table = await anyio.run_process([BUSBRIDGE, "health", "-c", str(view_main)], check=True)
            pc2_line = next(
                line
                for line in table.stdout.decode().splitlines()
                if line.split()[:3] == ["pc2", "bridge", "pc2"]
            )
            assert pc2_line.split()[3] == "stopped" and "(clean shutdown)" in pc2_line

            metrics = main_bridge.metrics
            probes = sum(
                metrics.registry.get_sample_value("busbridge_health_probes_total", {"status": s})
                or 0
                for s in ("healthy", "degraded", "unhealthy", "unknown")
            )
            assert probes >= 2 * len(MAINPC_EXPECTED)
            assert (
                metrics.registry.get_sample_value(
                    "busbridge_health_probe_failures_total", {"reason": "timeout"}
                )
                >= 2
            )
            assert (
                metrics.registry.get_sample_value(
                    "busbridge_health_probe_latency_seconds_count", {"method": "zmq_req"}
                )
                > 0
            )
            assert (
                metrics.registry.get_sample_value("busbridge_health_agents", {"status": "healthy"})
                == 2
            )
            kv_reports = metrics.registry.get_sample_value(
                "busbridge_health_written_total", {"contract": "health_report", "to": "kv"}
            )
            streamed = metrics.registry.get_sample_value(
                "busbridge_health_written_total", {"contract": "health_report", "to": "stream"}
            )

    # the stream: heartbeats every interval, a report per agent only when its status changed (once here)
    stored = await fetch_all(url, "ERRBUS")
    reports = [m for m in stored if isinstance(m.msg, HealthReport)]
    beats = [m for m in stored if isinstance(m.msg, BridgeHeartbeat)]
    mainpc_reports = [m for m in reports if m.msg.machine == "mainpc"]
    assert sorted(m.msg.service for m in mainpc_reports) == sorted(MAINPC_EXPECTED)  # each once
    assert len(mainpc_reports) == streamed < kv_reports
    assert {m.subject for m in reports} == {
        f"errbus.health.{m.msg.machine}.{m.msg.service}" for m in reports
    }
    assert {m.subject for m in beats} == {
        "errbus.bridge.mainpc.heartbeat",
        "errbus.bridge.pc2.heartbeat",
    }
    assert all(
        m.headers["Busbridge-Contract"] in ("health_report", "bridge_heartbeat")
        for m in [*reports, *beats]
    )


async def test_heartbeats_ride_out_a_nats_outage_and_the_latest_goes_out_after(
    tmp_path: Path,
) -> None:
    store = tmp_path / "nats"
    server = NatsServerProcess(store)
    server.start()
    try:
        cfg = make_config(
            server.url,
            tmp_path / "b",
            machine="solo",
            nats={"reconnect_wait_secs": 0.2},
            health=_health_section(None, 0),
        )
        async with running_bridge(cfg) as bridge:
            before = await _latest_heartbeat(server.url)
            await anyio.to_thread.run_sync(server.stop)
            # heartbeats are built and held while NATS is down
            await anyio.sleep(HEARTBEAT_SECS * 6)
            assert bridge.health is not None and bridge.health.sink.pending >= 1
            server = NatsServerProcess(store, port=server.port)
            await anyio.to_thread.run_sync(server.start)
            with anyio.fail_after(20):
                while (after := await _latest_heartbeat(server.url)).sent_at <= before.sent_at:
                    await anyio.sleep(0.2)
            # the same bridge, still up
            assert after.bridge_id == "solo" and after.started_at == before.started_at
            assert (
                bridge.metrics.registry.get_sample_value("busbridge_health_write_failures_total")
                >= 1
            )
    finally:
        server.stop()


async def _latest_heartbeat(url: str) -> BridgeHeartbeat:
    from contracts.codec import decode

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        with anyio.fail_after(20):
            while True:  # the bridge may not have created the bucket or written the key yet
                try:
                    kv = await js.key_value("busbridge_health")
                    msg = decode((await kv.get("bridge.solo.solo")).value or b"")
                    assert isinstance(msg, BridgeHeartbeat)
                    return msg
                except (nats.js.errors.BucketNotFoundError, nats.js.errors.KeyNotFoundError):
                    await anyio.sleep(0.1)
    finally:
        await nc.close()


def test_health_cli_fails_cleanly_without_nats_or_bucket(
    tmp_path: Path, nats_server: NatsServerProcess
) -> None:
    down = tmp_path / "down.yaml"
    down.write_text(
        "machine: x\nnats: {servers: ['nats://127.0.0.1:1'], connect_timeout_secs: 1}\n"
    )
    result = subprocess.run(
        [BUSBRIDGE, "health", "-c", str(down)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1 and "cannot connect to NATS" in result.stderr
    empty = tmp_path / "empty.yaml"
    empty.write_text(f"machine: x\nnats: {{servers: ['{nats_server.url}']}}\n")
    result = subprocess.run(
        [BUSBRIDGE, "health", "-c", str(empty)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1 and "busbridge_health does not exist" in result.stderr


async def test_watch_refreshes_until_interrupted(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    cfg = make_config(
        nats_server.url, tmp_path / "b", machine="solo", health=_health_section(None, 0)
    )
    view = _viewer_config(tmp_path, "solo", nats_server.url)
    async with running_bridge(cfg):
        await _until_view(view, lambda v: ("solo", "bridge", "solo") in v)
        async with await anyio.open_process(
            [BUSBRIDGE, "health", "--json", "--watch", "0.2", "-c", str(view)]
        ) as proc:
            assert proc.stdout is not None
            lines: list[bytes] = []
            with anyio.fail_after(20):
                buffer = b""
                while len(lines) < 6:  # 1 s of refreshes: two heartbeat intervals
                    buffer += await proc.stdout.receive()
                    *done, buffer = buffer.split(b"\n")
                    lines += done
            proc.send_signal(signal.SIGINT)
            assert await proc.wait() == 130
    snapshots = [json.loads(line) for line in lines]
    assert all(len(s) == 1 and s[0]["key"] == "bridge.solo.solo" for s in snapshots), snapshots
    assert (
        len({s[0]["report"]["event_id"] for s in snapshots}) >= 2
    )  # refreshed: newer heartbeats came in


async def test_a_crashed_bridge_turns_stale_not_stopped(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    """SIGKILL sends no farewell: the other machines see the bridge go stale (the crash case)."""
    bridge = BridgeProcess(
        tmp_path,
        nats_server.url,
        extra=f"health: {{enabled: true, heartbeat_interval_secs: {HEARTBEAT_SECS}, stale_after_intervals: 3}}\n",
    )
    viewer = _viewer_config(tmp_path, "mainpc", nats_server.url)
    key = ("LoadPC", "bridge", "LoadPC")
    bridge.start()
    try:
        view = await _until_view(viewer, lambda v: key in v)
        assert (
            view[key]["status"] == "healthy" and not view[key]["stale"] and not view[key]["stopped"]
        )
        bridge.kill()
        view = await _until_view(viewer, lambda v: v.get(key, {}).get("stale") is True)
        assert (
            view[key]["stale"]
            and not view[key]["stopped"]
            and view[key]["report"]["stopping"] is False
        )
    finally:
        bridge.kill()
