"""kill -9 of the decode worker process under load: ``busbridge run`` starts a new one, sends it
what the dead one had not answered, and every message reaches JetStream exactly once, in each
publisher's order; a SIGKILL of the bridge itself takes the worker down with it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import anyio
import pytest

from bridge.adapters.nats_server import NatsServerProcess
from loadtest.bridge_watch import metric
from loadtest.producer import SteadyProducer
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
