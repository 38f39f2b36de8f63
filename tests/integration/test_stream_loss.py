"""A NATS server that lost what it acknowledged (issue 17), reproduced without a power cut:
its store directory is copied while it is stopped, more events are published and
acknowledged, then the server is stopped again and the old copy put back, so it starts
without its last writes, exactly as after a power cut before its ``sync_interval``. The
bridge must find that out after the reconnect and publish the lost events again: every
event acknowledged before the "power cut" is in the stream afterwards, none twice."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import anyio
import pytest
import zmq

from bridge.adapters.nats_server import NatsServerProcess
from tests.support.bridge import make_config, running_bridge
from tests.support.frames import d1_frame
from tests.support.order import assert_exactly_once_in_order
from tests.support.stream import fetch_all, wait_for_count

pytestmark = pytest.mark.integration

FAST = {
    "nats": {"reconnect_wait_secs": 0.2},
    "publish": {"ack_timeout_secs": 1.0, "retry_max_secs": 0.5},
}


def _send(endpoint: str, ids: list[str]) -> None:
    """``ids`` as D1 events from one ZMQ publisher, in order (after the subscription settles)."""
    with zmq.Context() as ctx, ctx.socket(zmq.PUB) as pub:
        pub.setsockopt(zmq.LINGER, 5000)
        pub.connect(endpoint)
        time.sleep(0.5)  # slow joiner
        for error_id in ids:
            pub.send(d1_frame(error_id, "Agent001"))
            time.sleep(0.0005)


async def _restart(
    server: NatsServerProcess, store: Path, restore_from: Path | None = None
) -> None:
    """Stop ``server``, optionally put ``restore_from`` in place of its store, start it again
    (the same process object, so the same port, and the test's ``finally`` stops it)."""
    await anyio.to_thread.run_sync(server.stop)
    if restore_from is not None:
        shutil.rmtree(store)
        shutil.copytree(restore_from, store)
    await anyio.to_thread.run_sync(server.start)


async def _acked_across_a_copy(
    bridge, server: NatsServerProcess, store: Path, old: Path, before: int, after: int
) -> None:
    """Events ``p000-0 .. before-1`` stored; a clean restart with a copy of the store taken
    to ``old``; events ``before .. after-1`` stored and acknowledged (the spool empty)."""
    endpoint = bridge.zmq_endpoints[0]
    await anyio.to_thread.run_sync(_send, endpoint, [f"p000-{n:09d}" for n in range(before)])
    assert await wait_for_count(server.url, "ERRBUS", before, timeout_secs=30) == before
    await _restart(server, store)  # a clean restart loses nothing
    shutil.copytree(store, old, ignore=shutil.ignore_patterns("*.lock"))
    await _until(lambda: bridge.link.connected)
    await anyio.to_thread.run_sync(_send, endpoint, [f"p000-{n:09d}" for n in range(before, after)])
    assert await wait_for_count(server.url, "ERRBUS", after, timeout_secs=30) == after
    await _until(lambda: bridge.queue.rows == 0)  # every row acknowledged


async def _until(check, timeout_secs: float = 30.0) -> None:
    with anyio.fail_after(timeout_secs):
        while not check():
            await anyio.sleep(0.05)


@pytest.mark.parametrize("mode", ["pipelined", "batch"])
async def test_a_server_that_lost_its_last_writes_gets_them_again_exactly_once(
    tmp_path: Path, mode: str
) -> None:
    store, old = tmp_path / "nats", tmp_path / "nats-old"
    server = NatsServerProcess(store)
    server.start()
    try:
        cfg = make_config(
            server.url, tmp_path, publish={**FAST["publish"], "mode": mode}, nats=FAST["nats"]
        )
        async with running_bridge(cfg) as bridge:
            await _acked_across_a_copy(bridge, server, store, old, 300, 700)
            assert bridge.queue.retained_rows == 700
            assert bridge.metrics.spool_restored._value.get() == 0  # the clean restart

            # the "power cut": the server comes back with the store of before the second batch,
            # and traffic goes on meanwhile (acknowledged by the restarted server, reusing the
            # lost sequence numbers, possibly before the check runs)
            third = [f"p001-{n:09d}" for n in range(200)]
            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.to_thread.run_sync, _send, bridge.zmq_endpoints[0], third)
                await _restart(server, store, restore_from=old)
            await _until(lambda: bridge.metrics.spool_restored._value.get() >= 400)
            assert await wait_for_count(server.url, "ERRBUS", 900, timeout_secs=30) == 900
            await anyio.sleep(1.0)  # nothing more comes
        stored = await fetch_all(server.url, "ERRBUS")
        expected = {f"p000-{n:09d}" for n in range(700)} | set(third)
        assert_exactly_once_in_order(stored, expected)
        if mode == "pipelined":  # every row is an anchor: exactly the lost ones came again
            assert bridge.metrics.spool_restored._value.get() == 400
    finally:
        server.stop()


async def test_without_retention_the_loss_is_real(tmp_path: Path) -> None:
    """The same "power cut" with ``spool.retain_acked_secs: 0``: the 400 events acknowledged
    after the copy are gone for good (what the retention exists for; and proof that the
    restored store really lost them)."""
    store, old = tmp_path / "nats", tmp_path / "nats-old"
    server = NatsServerProcess(store)
    server.start()
    try:
        cfg = make_config(server.url, tmp_path, spool={"retain_acked_secs": 0}, **FAST)
        async with running_bridge(cfg) as bridge:
            await _acked_across_a_copy(bridge, server, store, old, 300, 700)
            assert bridge.queue.retained_rows == 0
            await _restart(server, store, restore_from=old)
            await _until(lambda: bridge.link.connected)
            await anyio.sleep(2.0)
            assert len(await fetch_all(server.url, "ERRBUS")) == 300
    finally:
        server.stop()


async def test_after_both_went_down_the_restarted_bridge_restores_from_its_spool(
    tmp_path: Path,
) -> None:
    """Embedded/leaf layout: the server and the bridge lose power together. The bridge's
    retained rows are on its disk; the new process checks at its first connect."""
    store, old = tmp_path / "nats", tmp_path / "nats-old"
    server = NatsServerProcess(store)
    server.start()
    try:
        cfg = make_config(server.url, tmp_path, **FAST)
        async with running_bridge(cfg) as bridge:
            await _acked_across_a_copy(bridge, server, store, old, 200, 500)
        await _restart(server, store, restore_from=old)  # bridge down meanwhile
        assert len(await fetch_all(server.url, "ERRBUS")) == 200
        async with running_bridge(cfg) as restarted:
            assert restarted.queue.retained_rows == 500  # from its spool file
            await _until(lambda: restarted.metrics.spool_restored._value.get() >= 300)
            assert await wait_for_count(server.url, "ERRBUS", 500, timeout_secs=30) == 500
            await anyio.sleep(1.0)
        stored = await fetch_all(server.url, "ERRBUS")
        assert_exactly_once_in_order(stored, {f"p000-{n:09d}" for n in range(500)})
        # fast-ingest batches: an anchor per committed batch, so whole batches may come again
        # (the duplicate window drops the copies, as the exactly-once check above shows)
        assert 300 <= restarted.metrics.spool_restored._value.get() < 500
    finally:
        server.stop()
