"""The decode worker process in a real bridge: kill -9 of it under load (``busbridge run`` starts
a new one, sends it what the dead one had not answered, and every message reaches JetStream
exactly once, in each publisher's order; a SIGKILL of the bridge itself takes the worker down
with it), and the default ``auto``, which sends it bursts only."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import anyio
import pytest
import zmq

from bridge.adapters.nats_server import NatsServerProcess
from loadtest.bridge_watch import metric
from loadtest.producer import SteadyProducer, envelope
from tests.support.order import assert_exactly_once_in_order
from tests.support.process import BridgeProcess
from tests.support.stream import fetch_all, wait_for_count

pytestmark = pytest.mark.integration

_WORKER = b"bridge.adapters.decode_worker"


def _workers_of(parent: int) -> list[int]:
    """PIDs of the decode worker processes whose parent is ``parent`` (from ``/proc``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent and fields[0] != "Z" and _WORKER in cmdline:
            found.append(int(entry.name))
    return found


def _wait_for_worker(parent: int, other_than: int | None = None, timeout_secs: float = 20.0) -> int:
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        pids = [p for p in _workers_of(parent) if p != other_than]
        if pids:
            return pids[0]
        time.sleep(0.05)
    raise AssertionError(f"no decode worker under pid {parent}")


def test_a_killed_decode_worker_loses_and_doubles_nothing(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    bridge = BridgeProcess(tmp_path, nats_server.url, extra="zmq: {decode_worker: true}\n")
    try:
        bridge.start()
        assert bridge.pid is not None
        first = _wait_for_worker(bridge.pid)
        producer = SteadyProducer(bridge.endpoint, publishers=3, rate=3000)
        producer.start()
        time.sleep(1.5)
        os.kill(first, signal.SIGKILL)
        second = _wait_for_worker(bridge.pid, other_than=first)
        time.sleep(1.5)
        producer.stop()
        sent = {f"p{p:03d}-{n:09d}" for p, ns in enumerate(producer.sent) for n in ns}
        assert len(sent) > 5000
        anyio.run(wait_for_count, nats_server.url, "ERRBUS", len(sent), 60.0, 1.0, 3.0)
        assert metric(bridge.admin_port, "busbridge_decode_worker_restarts_total") == 1
        assert metric(bridge.admin_port, "busbridge_decode_worker_up") == 1
        bridge.kill()
        deadline = time.monotonic() + 10
        while _alive(second):
            assert time.monotonic() < deadline, "the decode worker outlived its bridge"
            time.sleep(0.05)
        stored = anyio.run(fetch_all, nats_server.url, "ERRBUS")
    finally:
        bridge.kill()
    assert_exactly_once_in_order(stored, sent)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_burst_goes_partly_to_the_decode_worker_under_auto_and_is_stored_once_in_order(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    """The default ``zmq.decode_worker: auto`` on a real bridge: a trickle is decoded in the
    bridge's process, a burst partly in the worker (``busbridge_decode_worker_messages_total``),
    and all of it reaches JetStream exactly once, in each publisher's order."""
    bridge = BridgeProcess(tmp_path, nats_server.url)
    ctx = zmq.Context()
    socks = [ctx.socket(zmq.PUB) for _ in range(2)]
    try:
        bridge.start()
        assert bridge.pid is not None
        _wait_for_worker(bridge.pid)
        for sock in socks:
            sock.setsockopt(zmq.SNDHWM, 0)  # a burst: nothing dropped on our side
            sock.setsockopt(zmq.LINGER, 5000)
            sock.connect(bridge.endpoint)
        time.sleep(0.5)  # PUB/SUB: the subscription must arrive first
        sent: set[str] = set()
        for n in range(20):  # a trickle
            socks[0].send(envelope(0, n))
            sent.add(f"p000-{n:09d}")
            time.sleep(0.01)
        anyio.run(wait_for_count, nats_server.url, "ERRBUS", len(sent), 30.0, 0.5, 1.0)
        assert metric(bridge.admin_port, "busbridge_decode_worker_messages_total") == 0
        for n in range(20, 15_020):  # a burst from both publishers, interleaved
            for p, sock in enumerate(socks):
                sock.send(envelope(p, n))
                sent.add(f"p{p:03d}-{n:09d}")
        anyio.run(wait_for_count, nats_server.url, "ERRBUS", len(sent), 60.0, 1.0, 3.0)
        in_worker = metric(bridge.admin_port, "busbridge_decode_worker_messages_total")
        assert 0 < in_worker < len(sent)
        stored = anyio.run(fetch_all, nats_server.url, "ERRBUS")
    finally:
        for sock in socks:
            sock.close(linger=0)
        ctx.term()
        bridge.kill()
    assert_exactly_once_in_order(stored, sent)
