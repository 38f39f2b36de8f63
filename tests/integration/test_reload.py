"""Hot reload on a running bridge: flood rules change live without dropping the ZMQ
socket or messages; an invalid file keeps the running config; restart-bound changes
are refused; SIGHUP reloads a real ``busbridge run`` process."""

from __future__ import annotations

import signal
import time
import urllib.request
from pathlib import Path

import anyio
import msgspec
import pytest
import yaml
import zmq

from bridge.adapters.nats_server import NatsServerProcess
from bridge.config.reload import ConfigReloader
from contracts.messages import ErrorEvent
from loadtest.producer import envelope
from loadtest.replay import connect_publishers
from tests.support.bridge import make_config, running_bridge
from tests.support.process import BridgeProcess
from tests.support.stream import fetch_all, wait_for_count

pytestmark = pytest.mark.integration


def _write(path: Path, cfg, **flood) -> None:
    doc = msgspec.to_builtins(cfg)
    doc["flood"].update(flood)
    path.write_text(yaml.safe_dump(doc))


async def test_flood_rules_reload_live_under_traffic(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    cfg = make_config(nats_server.url, tmp_path, flood={"enabled": True})
    path = tmp_path / "bridge.yaml"
    _write(path, cfg)
    async with running_bridge(cfg) as bridge:
        reloader = ConfigReloader(
            path, cfg, bridge.apply_config, lambda r: bridge.metrics.config_reloads.labels(r).inc()
        )
        ingest = bridge.ingest
        ctx = zmq.Context()
        [sock] = await anyio.to_thread.run_sync(connect_publishers, ctx, bridge.zmq_endpoints[0], 1)
        try:
            for n in range(20):  # the timeout rule passes 5 per 30 s
                sock.send(envelope(0, n))
            assert (
                await wait_for_count(nats_server.url, "ERRBUS", 6) >= 6
            )  # 5 events + FloodStarted
            _write(path, cfg, rules=[], default_threshold=1000)
            assert reloader.reload() == "applied"
            for n in range(20, 40):  # same fingerprint, same window: now under the new threshold
                sock.send(envelope(0, n))
            await wait_for_count(nats_server.url, "ERRBUS", 26)
            path.write_text("flood: {default_threshold: -3}\n")
            assert reloader.reload() == "invalid"
            doc = yaml.safe_load(yaml.safe_dump(msgspec.to_builtins(reloader.running)))
            doc["zmq"]["rcvhwm"] = 10
            path.write_text(yaml.safe_dump(doc))
            assert reloader.reload() == "refused"
            sock.send(envelope(0, 40))  # still running on the same socket, with the reloaded rules
            await wait_for_count(nats_server.url, "ERRBUS", 27)
            assert bridge.ingest is ingest and bridge.cfg.zmq.rcvhwm == cfg.zmq.rcvhwm
        finally:
            sock.close(linger=0)
            ctx.term()
    events = [
        m.msg for m in await fetch_all(nats_server.url, "ERRBUS") if isinstance(m.msg, ErrorEvent)
    ]
    assert len(events) == 5 + 20 + 1


def test_sighup_reloads_a_running_process(nats_server: NatsServerProcess, tmp_path: Path) -> None:
    bridge = BridgeProcess(tmp_path, nats_server.url, extra="config_watch_secs: 3600\n")
    bridge.start()
    try:
        bridge.config.write_text(
            bridge.config.read_text().replace("log_level: INFO", "log_level: DEBUG")
        )
        bridge.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = (
                urllib.request.urlopen(f"http://127.0.0.1:{bridge.admin_port}/metrics")
                .read()
                .decode()
            )
            if 'busbridge_config_reloads_total{result="applied"} 1.0' in text:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("SIGHUP did not reload")
        assert bridge.stop() == 0
    finally:
        bridge.kill()
    assert "config reload applied: log_level" in bridge.log.read_text()


async def test_publish_window_and_pending_limit_reload_live(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    cfg = make_config(nats_server.url, tmp_path)
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(msgspec.to_builtins(cfg)))
    async with running_bridge(cfg) as bridge:
        reloader = ConfigReloader(
            path, cfg, bridge.apply_config, lambda r: bridge.metrics.config_reloads.labels(r).inc()
        )
        doc = msgspec.to_builtins(cfg)
        doc["publish"].update(max_in_flight=1, max_pending=50)
        path.write_text(yaml.safe_dump(doc))
        assert reloader.reload() == "applied"
        current = bridge.publisher.current  # the publisher chosen at connect (batch or pipelined)
        assert (current.max_in_flight, current.max_pending) == (1, 50)
        ctx = zmq.Context()
        [sock] = await anyio.to_thread.run_sync(connect_publishers, ctx, bridge.zmq_endpoints[0], 1)
        peak = 0
        try:
            for n in range(300):
                sock.send(envelope(3, n))
            with anyio.fail_after(30):
                while (stored := len(await fetch_all(nats_server.url, "ERRBUS"))) < 300:
                    for _ in range(50):  # the window is one message at a time now
                        peak = max(peak, bridge.publisher.in_flight)
                        await anyio.sleep(0.001)
        finally:
            sock.close(linger=0)
            ctx.term()
        assert stored == 300 and peak == 1
