"""Walk every phase and back under steady load, by config file edits and by the fleet KV
key (``busbridge phase set``), with the parity checker feeding the guard.

What must hold (real nats-server, real ZMQ sockets): every event sent while a
phase that publishes (dual, nats_primary) was in force is stored, exactly once;
nothing sent while zmq_only was in force is stored. Messages sent within
``MARGIN_SECS`` of a switch may fall either side (they sit in socket buffers at
the switch), so they are only checked for "at most once".
"""

from __future__ import annotations

from pathlib import Path

import anyio
import msgspec
import pytest
import yaml

from bridge.adapters.nats_server import NatsServerProcess
from bridge.app import Bridge
from bridge.cli import main
from bridge.config.reload import ConfigReloader
from bridge.phase import Phase
from contracts.messages import ErrorEvent, PhaseChanged
from loadtest.phase_walk import PhaseWindows
from loadtest.producer import SteadyProducer
from tests.support.bridge import make_config, running_bridge
from tests.support.stream import fetch_all

pytestmark = pytest.mark.integration

RATE = 400.0
PUBLISHERS = 2
MARGIN_SECS = 1.0  # messages this close to a switch may sit in socket buffers across it
HOLD_SECS = 2.5
GUARDS = {"min_parity_events": 50, "min_parity_ratio": 1.0, "quiet_period_secs": 2.0}
PARITY = {"match_window_secs": 3.0, "window_secs": 120.0}


def _check(walk: PhaseWindows, stored_ids: list[str]) -> dict[str, int]:
    """Assert the phase rules over the stored ids; return checked counts by kind."""
    report = walk.check(stored_ids)
    assert report["duplicated"] == 0, "duplicates in the stream"
    assert report["lost"] == [], f"sent in a publishing phase, not stored: {report['lost'][:10]}"
    assert report["leaked"] == [], f"sent in zmq_only, stored: {report['leaked'][:10]}"
    publishing = sum(w["checked"] for w in report["windows"] if w["phase"] != "zmq_only")
    return {
        "must": publishing,
        "must_not": sum(w["checked"] for w in report["windows"] if w["phase"] == "zmq_only"),
    }


async def _until(predicate, timeout_secs: float = 30.0, what: str = "") -> None:
    with anyio.fail_after(timeout_secs):
        while not predicate():
            await anyio.sleep(0.1)


def _parity_ready(bridge: Bridge) -> bool:
    stats = bridge.phases.parity.stats()
    return stats.compared >= GUARDS["min_parity_events"]


async def test_walk_by_config_file_under_load(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    cfg = make_config(
        nats_server.url, tmp_path, phase={"current": "zmq_only", "guards": GUARDS}, parity=PARITY
    )
    path = tmp_path / "bridge.yaml"

    def write(phase: str, force: bool = False) -> None:
        doc = msgspec.to_builtins(cfg)
        doc["phase"].update(current=phase, force=force)
        path.write_text(yaml.safe_dump(doc))

    write("zmq_only")
    async with running_bridge(cfg) as bridge:
        reloader = ConfigReloader(path, cfg, bridge.apply_config)
        producer = SteadyProducer(bridge.zmq_endpoints[0], publishers=PUBLISHERS, rate=RATE)
        await anyio.to_thread.run_sync(producer.start)
        walk = PhaseWindows(producer, bridge, RATE, MARGIN_SECS)
        try:
            await anyio.sleep(HOLD_SECS)
            for phase in ("dual", "nats_primary"):
                if phase == "nats_primary":
                    await _until(lambda: _parity_ready(bridge), what="parity events")
                    assert bridge.phases.parity.stats().ratio == 1.0  # clean run: 100% parity
                write(phase)
                assert reloader.reload() == "applied"
                assert bridge.phases.phase.value == phase, bridge.phases.controller.last
                await anyio.sleep(HOLD_SECS)
            write("nats_only")  # traffic goes on: the quiet-period guard refuses
            assert reloader.reload() == "applied"
            refusal = bridge.phases.controller.refusal
            assert refusal is not None and "ZMQ quiet for" in refusal.reason
            assert bridge.phases.phase is Phase.NATS_PRIMARY
            for phase in ("dual", "zmq_only", "dual"):  # rollbacks, then forward again
                write(phase)
                assert reloader.reload() == "applied"
                assert bridge.phases.phase.value == phase
                await anyio.sleep(HOLD_SECS)
        finally:
            await anyio.to_thread.run_sync(producer.stop)
            walk.close()
        await _until(lambda: bridge.pipeline.backlog == 0, what="drain")
    msgs = await fetch_all(nats_server.url, "ERRBUS")
    counts = _check(walk, [m.msg.event_id for m in msgs if isinstance(m.msg, ErrorEvent)])
    assert counts["must"] > 500 and counts["must_not"] > 200
    changes = [(m.msg.from_phase, m.msg.to_phase) for m in msgs if isinstance(m.msg, PhaseChanged)]
    assert changes == [
        ("zmq_only", "dual"),
        ("dual", "nats_primary"),
        ("nats_primary", "dual"),
        ("dual", "zmq_only"),
        ("zmq_only", "dual"),
    ]


async def test_walk_by_fleet_kv_with_the_cli_under_load(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    cfg = make_config(
        nats_server.url,
        tmp_path,
        phase={"current": "zmq_only", "source": "kv", "guards": GUARDS},
        parity=PARITY,
        admin={"port": 0},
    )
    cfg_path = tmp_path / "cli.yaml"
    cfg_path.write_text(yaml.safe_dump(msgspec.to_builtins(cfg)))

    def cli(*argv: str) -> tuple[int, str]:
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            status = main(
                ["phase", *argv, "-c", str(cfg_path), "--wait", "20"]
                if argv[0] == "set"
                else ["phase", *argv, "-c", str(cfg_path)]
            )
        return status, out.getvalue()

    async def set_phase(*argv: str) -> tuple[int, str]:
        return await anyio.to_thread.run_sync(cli, "set", *argv)

    async with running_bridge(cfg) as bridge:
        producer = SteadyProducer(bridge.zmq_endpoints[0], publishers=PUBLISHERS, rate=RATE)
        await anyio.to_thread.run_sync(producer.start)
        walk = PhaseWindows(producer, bridge, RATE, MARGIN_SECS)
        try:
            await anyio.sleep(HOLD_SECS)
            status, out = await set_phase("dual", "--fleet")
            assert status == 0 and "TestPC: applied -> phase dual" in out, out
            status, out = await set_phase("nats_only")  # skips a phase: refused, with the reason
            assert status == 1 and "refused" in out and "skips a phase" in out, out
            await _until(lambda: _parity_ready(bridge), what="parity events")
            status, out = await set_phase("nats_primary")
            assert status == 0 and "applied -> phase nats_primary" in out, out
            await anyio.sleep(HOLD_SECS)
            status, out = await set_phase("zmq_only", "--fleet")  # fleet rollback, newest key wins
            assert status == 0 and "applied -> phase zmq_only" in out, out
            await anyio.sleep(HOLD_SECS)
            status, out = await set_phase("dual")
            assert status == 0, out
            await anyio.sleep(HOLD_SECS)
            status, out = await anyio.to_thread.run_sync(cli, "show")
            assert status == 0 and "status" not in out.split("\n")[0]
            assert "bridge TestPC" in out and "dual" in out, out
        finally:
            await anyio.to_thread.run_sync(producer.stop)
            walk.close()
        await _until(lambda: bridge.pipeline.backlog == 0, what="drain")
    msgs = await fetch_all(nats_server.url, "ERRBUS")
    counts = _check(walk, [m.msg.event_id for m in msgs if isinstance(m.msg, ErrorEvent)])
    assert counts["must"] > 400 and counts["must_not"] > 200
    bys = [m.msg.by for m in msgs if isinstance(m.msg, PhaseChanged)]
    assert [b.split("@")[0] for b in bys] == [
        "kv:fleet",
        "kv:machine.TestPC",
        "kv:fleet",
        "kv:machine.TestPC",
    ]
