"""Each cutover phase against a real nats-server and real ZMQ sockets: what reaches JetStream,
what reaches the legacy republish socket, whether the ingest port is bound; loop prevention;
guards refusing a premature transition and ``force`` recorded in ``PhaseChanged``."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import nats
import pytest
import zmq

from bridge.adapters.nats_server import NatsServerProcess
from bridge.app import Bridge
from bridge.legacy.reemit import is_reemitted
from bridge.phase import Phase
from contracts.codec import encode
from contracts.messages import ErrorEvent, PhaseChanged, Severity
from loadtest.producer import envelope
from loadtest.replay import connect_publishers
from tests.support.bridge import make_config, running_bridge
from tests.support.stream import fetch_all, wait_for_count

pytestmark = pytest.mark.integration


class LegacySubscriber:
    """A legacy subscriber on the republish socket: a SUB connected, subscribed to everything."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(endpoint)

    async def receive(self, n: int, timeout_secs: float = 15.0) -> list[list[bytes]]:
        out: list[list[bytes]] = []
        with anyio.move_on_after(timeout_secs):
            while len(out) < n:
                try:
                    out.append(self.sock.recv_multipart(zmq.NOBLOCK))
                except zmq.Again:
                    await anyio.sleep(0.01)
        return out

    async def quiet(self, secs: float = 1.0) -> list[list[bytes]]:
        await anyio.sleep(secs)
        return await self.receive(10**9, timeout_secs=0.2)

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


async def _send(endpoint: str, frames: list[bytes] | list[bytes | list[bytes]]) -> None:
    """Send each item as one ZMQ message: a frame, or (a list) the frames of a multi-part one."""

    def run() -> None:
        with zmq.Context() as ctx:
            [sock] = connect_publishers(ctx, endpoint, 1)
            for f in frames:
                if isinstance(f, list):
                    sock.send_multipart(f)
                else:
                    sock.send(f)
            sock.close(linger=5000)

    await anyio.to_thread.run_sync(run)


def _errors(msgs: list) -> list[ErrorEvent]:
    return [m.msg for m in msgs if isinstance(m.msg, ErrorEvent)]


def _config(nats_server: NatsServerProcess, tmp_path: Path, phase: str, **sections):
    return make_config(nats_server.url, tmp_path, phase={"current": phase}, **sections)


async def _subscriber_ready(bridge: Bridge, sub: LegacySubscriber) -> None:
    """Send probe frames until the subscriber's connection carries them (ZMQ slow joiner)."""
    with anyio.fail_after(10):
        while True:
            await _send(bridge.zmq_endpoints[0], [envelope(99, 0)])
            if await sub.receive(1, timeout_secs=0.3):
                await sub.quiet(0.3)
                return


async def test_zmq_only_shadows_republishes_byte_for_byte_and_stores_nothing(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    cfg = _config(nats_server, tmp_path, "zmq_only")
    async with running_bridge(cfg) as bridge:
        sub = LegacySubscriber(bridge.phases.republish_endpoint)
        try:
            await _subscriber_ready(bridge, sub)
            frames: list[bytes | list[bytes]] = [envelope(1, n) for n in range(50)]
            frames += [b"\xff\xfe not json at all", [b"two", b"\x00frames"]]
            await _send(bridge.zmq_endpoints[0], frames)
            got = await sub.receive(len(frames))
            # byte for byte, in order, the garbage and the multi-part message too
            assert got == [f if isinstance(f, list) else [f] for f in frames]
            await anyio.sleep(1.0)
            reg = bridge.metrics.registry
            assert (
                reg.get_sample_value(
                    "busbridge_inventory_events_total",
                    {"source": "Agent001", "dialect": "errpub_envelope"},
                )
                == 50
            )
            assert (
                reg.get_sample_value("busbridge_dead_letters_total", {"reason": "invalid_utf8"})
                == 1
            )
        finally:
            sub.close()
    assert await fetch_all(nats_server.url, "ERRBUS") == []  # shadow: nothing published


async def test_dual_mirrors_every_event_and_republishes(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    cfg = _config(nats_server, tmp_path, "dual")
    async with running_bridge(cfg) as bridge:
        sub = LegacySubscriber(bridge.phases.republish_endpoint)
        try:
            await _subscriber_ready(bridge, sub)
            frames = [envelope(2, n) for n in range(100)]
            await _send(bridge.zmq_endpoints[0], frames)
            assert [f for [f] in await sub.receive(100)] == frames
            assert await wait_for_count(nats_server.url, "ERRBUS", 102) >= 101
        finally:
            sub.close()
    ids = [e.event_id for e in _errors(await fetch_all(nats_server.url, "ERRBUS"))]
    assert [i for i in ids if i.startswith("p002")] == [f"p002-{n:09d}" for n in range(100)]


async def test_nats_primary_reemits_native_events_and_never_loops(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    cfg = _config(nats_server, tmp_path, "nats_primary")
    async with running_bridge(cfg) as bridge:
        sub = LegacySubscriber(bridge.phases.republish_endpoint)
        nc = await nats.connect(nats_server.url)
        try:
            await _subscriber_ready(bridge, sub)
            with anyio.fail_after(10):  # the native re-emitter's consumer is up
                while bridge.phases.native is None or bridge.phases.native.reemitted == 0:
                    await _publish_native(nc, "native-probe")
                    await anyio.sleep(0.3)
            await sub.quiet(0.5)
            # legacy traffic still mirrored and republished as is
            await _send(bridge.zmq_endpoints[0], [envelope(3, n) for n in range(20)])
            assert [f for [f] in await sub.receive(20)] == [envelope(3, n) for n in range(20)]
            # NATS-native events reach legacy subscribers as D1, marked
            for n in range(10):
                await _publish_native(nc, f"native-{n}")
            native = await sub.receive(10)
            assert len(native) == 10 and all(is_reemitted(f) for f in native)
            assert [json.loads(f[0][6:])["error_data"]["error_id"] for f in native] == [
                f"native-{n}" for n in range(10)
            ]
            assert (
                await sub.quiet(1.0) == []
            )  # bridge-ingested events (origin header) are not re-emitted
            # a re-emitted frame that comes back into the ingest socket is dropped, not stored again
            before = len(await fetch_all(nats_server.url, "ERRBUS"))
            await _send(bridge.zmq_endpoints[0], [f[0] for f in native])
            await anyio.sleep(1.5)
            assert bridge.metrics.registry.get_sample_value("busbridge_loop_dropped_total") == 10
            assert await sub.quiet(0.2) == []  # and not republished either
            assert len(await fetch_all(nats_server.url, "ERRBUS")) == before
        finally:
            await nc.close()
            sub.close()
    stored = _errors(await fetch_all(nats_server.url, "ERRBUS"))
    ids = [e.event_id for e in stored]
    assert len(ids) == len(set(ids))
    assert sum(1 for i in ids if i.startswith("p003")) == 20


async def _publish_native(nc, event_id: str) -> None:
    from datetime import UTC, datetime

    ev = ErrorEvent(
        event_id=event_id,
        occurred_at=None,
        received_at=datetime.now(UTC),
        machine="TestPC",
        source="MigratedAgent",
        severity=Severity.ERROR,
        error_type="native",
        message="from NATS",
    )
    await nc.jetstream().publish(
        "errbus.error.TestPC.error.MigratedAgent", encode(ev), headers={"Nats-Msg-Id": event_id}
    )


async def test_nats_only_releases_the_port_and_rollback_binds_it_again(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    cfg = make_config(
        nats_server.url,
        tmp_path,
        phase={"current": "nats_primary", "guards": {"quiet_period_secs": 0.5}},
    )
    async with running_bridge(cfg) as bridge:
        endpoint = bridge.zmq_endpoints[0]
        republish = bridge.phases.republish_endpoint
        await anyio.sleep(0.6)
        d = bridge.phases.request(Phase.NATS_ONLY, by="test")
        assert d.result == "applied", d.reason
        await anyio.sleep(0.3)
        assert bridge.ingest is None and bridge.zmq_endpoints == []
        _ok, details = bridge.readiness()
        assert "ingest_closed" not in details["reasons"] and details["phase"] == "nats_only"
        for taken in (endpoint, republish):  # both ports are free: another socket can bind them
            with zmq.Context() as ctx:
                s = ctx.socket(zmq.SUB)
                s.bind(taken)
                s.close(linger=0)
        assert bridge.phases.request(Phase.DUAL, by="rollback").result == "applied"
        with anyio.fail_after(5):
            while not bridge.zmq_endpoints:
                await anyio.sleep(0.05)
        await _send(bridge.zmq_endpoints[0], [envelope(4, n) for n in range(10)])
        assert (
            await wait_for_count(nats_server.url, "ERRBUS", 12) >= 12
        )  # 10 events + 2 PhaseChanged


async def test_guards_refuse_with_reasons_and_force_is_recorded(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    cfg = make_config(
        nats_server.url,
        tmp_path,
        phase={"current": "dual", "guards": {"min_parity_events": 1_000_000}},
    )
    async with running_bridge(cfg) as bridge:
        d = bridge.phases.request(Phase.NATS_ONLY, by="test")
        assert d.result == "refused" and "skips a phase" in d.reason
        d = bridge.phases.request(Phase.NATS_PRIMARY, by="test")
        assert d.result == "refused" and "needs >= 1000000" in d.reason
        assert bridge.phases.phase is Phase.DUAL
        d = bridge.phases.request(Phase.NATS_PRIMARY, by="operator --force", force=True)
        assert d.result == "forced" and bridge.phases.phase is Phase.NATS_PRIMARY
        d = bridge.phases.request(Phase.NATS_ONLY, by="test")
        assert d.result == "refused" and "ZMQ quiet for" in d.reason
        assert (
            bridge.metrics.registry.get_sample_value("busbridge_phase", {"phase": "nats_primary"})
            == 1
        )
        await wait_for_count(nats_server.url, "ERRBUS", 1)
    [changed] = [
        m.msg for m in await fetch_all(nats_server.url, "ERRBUS") if isinstance(m.msg, PhaseChanged)
    ]
    assert (changed.from_phase, changed.to_phase, changed.forced, changed.by) == (
        "dual",
        "nats_primary",
        True,
        "operator --force",
    )
    assert {g.name: g.passed for g in changed.guards} == {"parity": False, "spool_empty": True}


async def test_last_phase_holds_across_a_restart_while_nats_is_unreachable(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    """Fleet source: the phase taken from KV is persisted; a restart with NATS unreachable
    comes back in it (not in the config's default), and publishes nothing meanwhile."""
    from bridge.fleet_phase import FLEET_KEY, PhaseRequest, open_bucket, put_json

    cfg = make_config(nats_server.url, tmp_path, phase={"current": "dual", "source": "kv"})
    async with running_bridge(cfg) as bridge:
        nc = await nats.connect(nats_server.url)
        try:
            kv = await open_bucket(nc.jetstream(), "busbridge_phase")
            await put_json(kv, FLEET_KEY, PhaseRequest(phase=Phase.ZMQ_ONLY, by="test"))
        finally:
            await nc.close()
        with anyio.fail_after(10):
            while bridge.phases.phase is not Phase.ZMQ_ONLY:
                await anyio.sleep(0.05)
    dead = make_config("nats://127.0.0.1:1", tmp_path, phase={"current": "dual", "source": "kv"})
    async with running_bridge(dead, wait_nats=False) as bridge:
        assert bridge.phases.phase is Phase.ZMQ_ONLY
        assert not bridge.runner.routing.to_jetstream
