"""kill -9 of the bridge mid-load: everything that was in the spool at the kill is
stored exactly once after a restart; what was lost in socket buffers or the commit
window while the bridge was down is counted and reported."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import anyio
import pytest

from bridge.adapters.nats_server import NatsServerProcess
from loadtest.producer import SteadyProducer
from tests.support.order import assert_exactly_once_in_order
from tests.support.process import BridgeProcess
from tests.support.stream import fetch_all, wait_for_count

pytestmark = pytest.mark.integration


def _spooled_ids(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [
            row[0]
            for row in db.execute(
                "SELECT s.msg_id FROM pending p JOIN spool s ON s.seq = p.seq ORDER BY p.seq"
            )
        ]


def test_sigkill_mid_load_loses_nothing_that_was_spooled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "nats"
    server = NatsServerProcess(store)
    server.start()
    bridge = BridgeProcess(
        tmp_path, server.url, extra="publish: {ack_timeout_secs: 1.0, retry_max_secs: 0.5}\n"
    )
    try:
        bridge.start()
        producer = SteadyProducer(bridge.endpoint, publishers=3, rate=1500)
        producer.start()
        time.sleep(1.0)
        server.stop()  # NATS down: a backlog builds in the spool
        time.sleep(2.0)
        bridge.kill()  # crash mid-load, with the backlog on disk
        producer.stop()
        spooled = _spooled_ids(bridge.spool_path)
        assert len(spooled) > 1000
        server = NatsServerProcess(store, port=server.port)
        server.start()
        bridge.start()  # replays the spool first
        sent = {f"p{p:03d}-{n:09d}" for p, ns in enumerate(producer.sent) for n in ns}
        anyio.run(wait_for_count, server.url, "ERRBUS", len(sent), 60.0, 1.0, 3.0)
        assert bridge.stop() == 0
        stored = anyio.run(fetch_all, server.url, "ERRBUS")
    finally:
        bridge.kill()
        server.stop()
    ids = {m.headers["Nats-Msg-Id"] for m in stored}
    assert set(spooled) <= ids, f"{len(set(spooled) - ids)} spooled messages lost"
    assert_exactly_once_in_order(stored, ids)
    lost = sent - ids
    with capsys.disabled():
        print(
            f"\n[crash] sent {len(sent)}, in the spool at the kill {len(spooled)}, stored {len(ids)}, "
            f"lost while the bridge was down (socket buffers, commit window) {len(lost)}"
        )
    assert ids <= sent
