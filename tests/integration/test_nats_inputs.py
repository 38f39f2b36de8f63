"""The NATS inputs of the pipeline against a real nats-server and a real bridge: native intake
(``busclient``), the legacy ``errors.>`` half replayed byte for byte from the capture of the real
library A and B publishers, ack only after the ERRBUS PubAck, one flood over two transports,
the migration view and the ``nats_only`` guard on legacy NATS publishers."""

from __future__ import annotations

import base64
import contextlib
import io
import json
from pathlib import Path

import anyio
import msgspec
import nats
import nats.js.errors
import pytest
from nats.js.api import StreamConfig

from bridge.adapters.nats_server import NatsServerProcess
from bridge.cli import main
from bridge.phase import Phase
from busclient import BusClient
from contracts.messages import DeadLetter, DeadLetterReason, Dialect, ErrorEvent, FloodStarted
from loadtest.producer import envelope
from tests.integration.test_phases import _send
from tests.support.bridge import make_config, running_bridge
from tests.support.stream import fetch_all

pytestmark = pytest.mark.integration

LIVE = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "legacy_nats_live.sample.jsonl"


def _captured_publishes() -> list[dict]:
    rows = [json.loads(line) for line in LIVE.read_text(encoding="utf-8").splitlines() if line]
    # what reached the server: the real run's failed publishes (BaseAgent's closed loop, the
    # > 1 MiB error the client refused) never did
    return [r for r in rows if r["kind"] == "publish" and r.get("ack") and not r.get("error")]


async def _legacy_stream(url: str, name: str = "ERRORS") -> nats.NATS:
    """Library A's stream, as the library creates it (no duplicate window, no msg ids)."""
    nc = await nats.connect(url)
    await nc.jetstream().add_stream(
        StreamConfig(name=name, subjects=["errors.>"], max_msgs=100_000, max_age=7 * 86400)
    )
    return nc


async def _replay(nc: nats.NATS, rows: list[dict]) -> None:
    """Publish each captured message byte for byte (subject, headers, payload)."""
    js = nc.jetstream()
    for r in rows:
        await js.publish(r["subject"], base64.b64decode(r["payload_b64"]), headers=r["headers"])


async def _consumer_state(url: str, stream: str, durable: str) -> tuple[int, int]:
    """``(pending, unacknowledged)``; ``(-1, -1)`` before the bridge created the consumer."""
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().consumer_info(stream, durable)
        return info.num_pending, info.num_ack_pending
    except nats.js.errors.NotFoundError:
        return -1, -1
    finally:
        await nc.close()


async def _settled(url: str, stream: str, durable: str, timeout_secs: float = 30) -> None:
    with anyio.fail_after(timeout_secs):
        while await _consumer_state(url, stream, durable) != (0, 0):
            await anyio.sleep(0.2)


def _events(stored: list) -> list[ErrorEvent]:
    return [m.msg for m in stored if isinstance(m.msg, ErrorEvent)]


async def test_captured_legacy_publishes_are_stored_once_per_error(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    rows = _captured_publishes()
    ids = {
        json.loads(base64.b64decode(r["payload_b64"])).get("id")
        or json.loads(base64.b64decode(r["payload_b64"])).get("error_id")
        for r in rows
    }
    nc = await _legacy_stream(nats_server.url)
    try:
        await _replay(nc, rows)
    finally:
        await nc.close()
    cfg = make_config(nats_server.url, tmp_path, intake={"legacy_poll_secs": 0.5})
    async with running_bridge(cfg) as bridge:
        await _settled(nats_server.url, "ERRORS", "busbridge_legacy")
        stored = await fetch_all(nats_server.url, "ERRBUS")
        events = _events(stored)
        by_id = {e.event_id: e for e in events}
        assert len(events) == len(by_id) == len(ids), "one event per distinct legacy error"
        assert set(by_id) == ids
        dialects = {e.legacy.dialect for e in events if e.legacy}
        assert dialects == {Dialect.NATS_LIBRARY_A, Dialect.NATS_LIBRARY_B}
        assert all(e.occurred_at is None or e.occurred_at.tzinfo is not None for e in events)
        assert not [m for m in stored if isinstance(m.msg, DeadLetter)]
        reg = bridge.metrics.registry
        acked = sum(
            reg.get_sample_value(
                "busbridge_intake_messages_total", {"input": "legacy", "outcome": o}
            )
            or 0
            for o in ("stored", "duplicate")
        )
        assert acked == len(rows)  # every copy acked: stored once, the other copies duplicates
        view = bridge.phases.describe()["migration"]
        transports = {r["transport"] for r in view["sources"]}
        assert {"nats:library_a", "nats:library_b"} <= transports
        assert view["legacy_nats_idle_secs"] is not None


async def test_legacy_message_is_acked_only_after_the_errbus_puback(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    """ERRBUS refuses to store (its stream deleted under the bridge): the legacy messages stay
    unacknowledged, the bridge stops, and the next bridge stores and acks every one once."""
    rows = [r for r in _captured_publishes() if r["lib"] == "B"][:20]
    nc = await _legacy_stream(nats_server.url, "ERROR_STREAM")
    cfg = make_config(
        nats_server.url,
        tmp_path,
        intake={"legacy_poll_secs": 0.5},
        publish={"ack_timeout_secs": 0.5, "retry_max_secs": 0.2, "drain_timeout_secs": 1},
        spool={"enabled": False},
    )
    try:
        async with running_bridge(cfg):
            await nc.jetstream().delete_stream("ERRBUS")  # PubAcks now: no responders
            await _replay(nc, rows)
            with anyio.fail_after(20):
                while (await _consumer_state(nats_server.url, "ERROR_STREAM", "busbridge_legacy"))[
                    1
                ] < len(rows):
                    await anyio.sleep(0.1)
            _, unacked = await _consumer_state(nats_server.url, "ERROR_STREAM", "busbridge_legacy")
            assert unacked == len(rows)  # delivered, processed, not acknowledged: no PubAck yet
        async with running_bridge(cfg):  # provisions ERRBUS again
            await _settled(nats_server.url, "ERROR_STREAM", "busbridge_legacy")
            events = _events(await fetch_all(nats_server.url, "ERRBUS"))
        ids = {json.loads(base64.b64decode(r["payload_b64"]))["error_id"] for r in rows}
        assert sorted(e.event_id for e in events) == sorted(ids)
    finally:
        await nc.close()


async def test_native_events_join_the_bus_with_the_same_flood_control(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    """busclient -> intake -> the bridge: stored once with a fingerprint; one agent flooding
    over ZMQ and natively is one flood; the intake messages are acknowledged (work queue);
    ``busbridge migration`` then lists the ZMQ, legacy NATS and native sources of the run."""
    legacy_rows = [r for r in _captured_publishes() if r["lib"] == "B"][:2]
    legacy_nc = await _legacy_stream(nats_server.url, "ERROR_STREAM")
    try:
        await _replay(legacy_nc, legacy_rows)
    finally:
        await legacy_nc.close()
    cfg = make_config(
        nats_server.url,
        tmp_path,
        flood={"enabled": True, "rules": [], "default_threshold": 5, "default_window_secs": 60},
        migration={"report_interval_secs": 0.5},
        intake={"legacy_poll_secs": 0.5},
    )
    async with running_bridge(cfg) as bridge:
        async with BusClient(  # async: the bridge runs on this event loop
            servers=[nats_server.url], machine="TestPC", source="NativeAgent", client_api="native"
        ) as client:
            first = client.report("ValueError", "bad input 1", details={"k": 1})
            client.report("ValueError", "bad input 1", event_id=first.event_id)  # a retry: copy
            for n in range(4):  # the same fingerprint as the ZMQ frames below
                client.report("DiskFull", f"disk full on /dev/sda{n}", source="Flooder")
            assert await client.aflush(10)
        frames = [
            b"ERROR:"
            + msgspec.json.encode(
                {
                    "source": "Flooder",
                    "error_type": "DiskFull",
                    "message": f"disk full on /dev/sdb{n}",
                }
            )
            for n in range(4)
        ]
        await _send(bridge.zmq_endpoints[0], frames)
        await _send(bridge.zmq_endpoints[0], [envelope(1, 1)])
        with anyio.fail_after(20):
            while True:
                stored = await fetch_all(nats_server.url, "ERRBUS")
                events = _events(stored)
                if len(events) >= 7:  # 1 native + 5 of the flooder passed + 1 envelope
                    break
                await anyio.sleep(0.2)
        await anyio.sleep(1.0)
        stored = await fetch_all(nats_server.url, "ERRBUS")
        events = _events(stored)
        native = [e for e in events if e.source == "NativeAgent"]
        assert len(native) == 1 and native[0].legacy is None and native[0].fingerprint
        assert native[0].details == {"k": 1}
        flooder = [e for e in events if e.source == "Flooder"]
        assert len(flooder) == 5  # threshold 5 over both transports together
        assert {e.legacy is None for e in flooder} == {True, False}
        starts = [m.msg for m in stored if isinstance(m.msg, FloodStarted)]
        assert len(starts) == 1 and starts[0].source == "Flooder"
        nc = await nats.connect(nats_server.url)
        try:
            intake = await nc.jetstream().stream_info("ERRBUS_INTAKE")
            assert intake.state.messages == 0  # work queue: every intake message acknowledged
        finally:
            await nc.close()
        await _settled(nats_server.url, "ERROR_STREAM", "busbridge_legacy")
        with anyio.fail_after(10):  # a report written after every source was seen
            while not any(
                s.transport == "nats:library_b" for r in bridge.fleet_reports for s in r.sources
            ):
                await anyio.sleep(0.1)
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"machine: TestPC\nnats: {{servers: ['{nats_server.url}']}}\n")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):  # the CLI runs its own event loop: in a thread
        argv = ["migration", "-c", str(cfg_file), "--json"]
        assert await anyio.to_thread.run_sync(main, argv) == 0
    view = json.loads(buf.getvalue())
    rows = {(r["source"], r["transport"]) for r in view["sources"]}
    assert ("NativeAgent", "native:native") in rows
    assert ("Flooder", "native:native") in rows and ("Flooder", "zmq:prefix_flat") in rows
    legacy_agent = json.loads(base64.b64decode(legacy_rows[0]["payload_b64"]))["source_agent"]
    assert (legacy_agent, "nats:library_b") in rows
    assert view["summary"]["legacy_nats_idle_secs"] is not None


async def test_nats_only_waits_for_the_legacy_nats_publishers_to_go_quiet(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    rows = [r for r in _captured_publishes() if r["lib"] == "A"][:4]
    nc = await _legacy_stream(nats_server.url)
    cfg = make_config(
        nats_server.url,
        tmp_path,
        intake={"legacy_poll_secs": 0.5},
        phase={"current": "nats_primary", "guards": {"quiet_period_secs": 2.0}},
    )
    try:
        async with running_bridge(cfg) as bridge:
            await _replay(nc, rows)
            await _settled(nats_server.url, "ERRORS", "busbridge_legacy")
            decision = bridge.phases.request(Phase.NATS_ONLY, by="test")
            assert decision.result == "refused"
            failed = {g.name for g in decision.guards if not g.passed}
            assert "legacy_nats_quiet" in failed
            await anyio.sleep(2.5)
            decision = bridge.phases.request(Phase.NATS_ONLY, by="test")
            assert decision.result == "applied", decision
    finally:
        await nc.close()


async def test_poison_legacy_payloads_become_dead_letters_not_loops(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    nc = await _legacy_stream(nats_server.url)
    try:
        js = nc.jetstream()
        await js.publish("errors.events", b"\xff\xfe not json")
        await js.publish("errors.events", b'{"neither": "library"}')
        await js.publish("errors.events", b"[1, 2]")
        cfg = make_config(nats_server.url, tmp_path, intake={"legacy_poll_secs": 0.5})
        async with running_bridge(cfg):
            await _settled(nats_server.url, "ERRORS", "busbridge_legacy")
            letters = [
                m.msg
                for m in await fetch_all(nats_server.url, "ERRBUS")
                if isinstance(m.msg, DeadLetter)
            ]
        reasons = sorted(d.reason for d in letters)
        assert reasons == sorted(
            [
                DeadLetterReason.INVALID_UTF8,
                DeadLetterReason.UNKNOWN_SCHEMA,
                DeadLetterReason.NOT_AN_OBJECT,
            ]
        )
        assert all("errors.events" in d.detail for d in letters)
        assert {d.frames[0] for d in letters} >= {b"\xff\xfe not json"}
    finally:
        await nc.close()
