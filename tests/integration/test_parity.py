"""The parity checker inside a bridge in ``dual``: 100% on a clean run, and injected loss on
either side detected and counted (real nats-server, real ZMQ). Both ZMQ sides: the default
in-process feed from ingest, and a SUB on configured endpoints (here the republish socket).
Both JetStream sides: the default, this bridge's PubAcks (which cannot see messages stored
under its id that it never published), and an ordered consumer (which does)."""

from __future__ import annotations

from pathlib import Path

import anyio
import nats
import pytest

from bridge.adapters.nats_server import NatsServerProcess
from bridge.phase import Phase
from contracts.subjects import HEADER_MSG_ID, HEADER_ORIGIN
from loadtest.harness import free_port
from loadtest.producer import SteadyProducer, envelope
from tests.integration.test_phases import _send
from tests.support.bridge import make_config, running_bridge

pytestmark = pytest.mark.integration


async def _settled(bridge, compared: int, timeout_secs: float = 20.0):
    with anyio.move_on_after(timeout_secs):
        while (stats := bridge.phases.parity.stats()).compared < compared or stats.pending:
            await anyio.sleep(0.1)
    assert stats.compared >= compared and not stats.pending, stats
    return stats


@pytest.mark.parametrize(
    ("zmq_side", "nats_side"),
    [("in_process", "pubacks"), ("in_process", "consumer"), ("sub_on_republish", "consumer")],
)
async def test_parity_clean_then_loss_on_each_side(
    nats_server: NatsServerProcess, tmp_path: Path, zmq_side: str, nats_side: str
) -> None:
    parity: dict = {"match_window_secs": 1.5, "window_secs": 600, "nats_side": nats_side}
    if nats_side == "pubacks":
        parity["readback_every"] = 10  # fast-ingest batches: sampled at the batches' ends
    extra: dict = {}
    if zmq_side == "sub_on_republish":
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        parity["zmq_endpoints"] = [endpoint]
        extra["republish"] = {"bind_endpoint": endpoint}
    cfg = make_config(
        nats_server.url,
        tmp_path,
        phase={"current": "dual", "guards": {"min_parity_events": 10}},
        parity=parity,
        **extra,
    )
    async with running_bridge(cfg) as bridge:
        with anyio.fail_after(15):  # both taps up: a probe frame matched
            n = 0
            while bridge.phases.parity.stats().matched == 0:
                await _send(bridge.zmq_endpoints[0], [envelope(9, n)])
                n += 1
                await anyio.sleep(0.3)
        tap = bridge.phases.parity_tap
        assert tap is not None and (tap.zmq_endpoints == parity.get("zmq_endpoints", []))
        assert (bridge.runner.routing.observe is not None) == (zmq_side == "in_process")
        await anyio.sleep(2)
        bridge.phases.parity.reset()

        await _send(bridge.zmq_endpoints[0], [envelope(1, n) for n in range(200)])
        stats = await _settled(bridge, 200)
        assert (stats.matched, stats.missing_nats, stats.missing_zmq, stats.ratio) == (
            200,
            0,
            0,
            1.0,
        )
        await anyio.sleep(1.5)  # past the ZMQ tap's warm-up (bridge.parity._WARMUP_SECS)

        # loss between ZMQ and JetStream: the sink drops every 5th event of the next 100
        sink, submit = bridge.runner._sink, bridge.runner._sink.submit
        dropped = []

        def lossy(item):
            if item.msg_id.startswith("p002") and int(item.msg_id[-3:]) % 5 == 0:
                dropped.append(item.msg_id)
                return True  # "accepted", never stored: a silent loss
            return submit(item)

        sink.submit = lossy
        await _send(bridge.zmq_endpoints[0], [envelope(2, n) for n in range(100)])
        # loss on the ZMQ side: messages stored with this bridge's origin that never crossed ZMQ
        nc = await nats.connect(nats_server.url)
        try:
            for k in range(15):
                await nc.jetstream().publish(
                    "errbus.error.TestPC.error.Ghost",
                    b"{}",
                    headers={HEADER_MSG_ID: f"ghost-{k}", HEADER_ORIGIN: "TestPC"},
                )
        finally:
            await nc.close()
        ghosts = 15 if nats_side == "consumer" else 0  # PubAcks only know what this bridge sent
        stats = await _settled(bridge, 200 + 100 + ghosts)
        sink.submit = submit
        assert len(dropped) == 20
        assert (stats.matched, stats.missing_nats, stats.missing_zmq) == (280, 20, ghosts)
        if nats_side == "pubacks":
            assert stats.ratio == pytest.approx(280 / 300)
            assert bridge.publisher is not None and bridge.publisher.mode == "batch"
            reg = bridge.metrics.registry

            def readbacks() -> dict[str, float | None]:
                return {
                    r: reg.get_sample_value("busbridge_parity_readback_total", {"result": r})
                    for r in ("ok", "mismatch", "missing")
                }

            with anyio.move_on_after(5):  # read back off the read loop, after the PubAck
                while not readbacks()["ok"]:
                    await anyio.sleep(0.05)
            assert (got := readbacks())["ok"] >= 1 and got["mismatch"] == got["missing"] == 0
            return
        assert stats.ratio == pytest.approx(280 / 315)
        reg = bridge.metrics.registry
        assert reg.get_sample_value("busbridge_parity_missing_total", {"side": "nats"}) == 20
        assert reg.get_sample_value("busbridge_parity_missing_total", {"side": "zmq"}) == 15
        assert reg.get_sample_value("busbridge_parity_ratio") == pytest.approx(280 / 315)
        decision = bridge.phases.request(Phase.NATS_PRIMARY, by="test")
        assert decision.result == "refused" and decision.reason.startswith(
            "parity 0.8889 < 0.9990 over 600 s (315 events)"
        )


async def test_parity_pauses_through_an_outage_and_resumes_on_live_traffic(tmp_path: Path) -> None:
    """While NATS is down and the backlog drains, the tap is stopped and the ledger reset; after
    the drain it compares live traffic again, and the outage left nothing counted as missing."""
    store = tmp_path / "nats"
    server = NatsServerProcess(store)
    server.start()
    try:
        cfg = make_config(
            server.url,
            tmp_path,
            phase={"current": "dual"},
            parity={"match_window_secs": 1.0, "window_secs": 600},
            nats={"reconnect_wait_secs": 0.2},
            publish={"ack_timeout_secs": 1.0, "retry_max_secs": 0.5},
        )
        async with running_bridge(cfg) as bridge:
            producer = SteadyProducer(bridge.zmq_endpoints[0], publishers=2, rate=300)
            await anyio.to_thread.run_sync(producer.start)
            try:
                with anyio.fail_after(30):  # the tap starts after 2 s of live traffic
                    while bridge.phases.parity.stats().matched < 100:
                        await anyio.sleep(0.1)
                await anyio.to_thread.run_sync(server.stop)
                with anyio.fail_after(5):  # paused: no tap, no feed, ledger reset
                    while bridge.phases.parity_tap is not None:
                        await anyio.sleep(0.05)
                assert (
                    bridge.runner.routing.observe is None
                    and bridge.phases.parity.stats().compared == 0
                )
                assert bridge.phases.describe()["parity"]["running"] is False  # /phase says so
                await anyio.sleep(
                    3.0
                )  # 3x the match window: a running tap would count these as missing
                assert bridge.phases.parity_tap is None and bridge.queue.rows > 300
                server = NatsServerProcess(store, port=server.port)
                await anyio.to_thread.run_sync(server.start)
                with anyio.fail_after(30):  # drained, then the tap is back and matching live events
                    while bridge.phases.parity.stats().matched < 200:
                        await anyio.sleep(0.1)
                assert not bridge.queue.draining and bridge.runner.routing.observe is not None
                view = bridge.phases.describe()["parity"]
                assert view["running"] is True and view["zmq_side"] == "in_process"
            finally:
                await anyio.to_thread.run_sync(producer.stop)
            stats = await _settled(bridge, 200)
        assert (stats.missing_nats, stats.missing_zmq) == (0, 0) and stats.ratio == 1.0, stats
    finally:
        server.stop()
