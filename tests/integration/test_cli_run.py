"""``busbridge run`` as a real process on the embedded default: starts its own
nats-server, becomes ready, mirrors frames, stops cleanly on SIGTERM (exit 0)
and takes its nats-server down with it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import zmq

from loadtest.corpus import load_corpus
from loadtest.replay import connect_publishers, replay
from tests.support.nats_server import running_nats_server
from tests.support.stream import fetch_all

pytestmark = pytest.mark.integration

BUSBRIDGE = str(Path(sys.executable).with_name("busbridge"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(port: int, proc: subprocess.Popen, timeout_secs: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        assert proc.poll() is None, "bridge exited early"
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1).status == 200:
                return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise AssertionError("bridge never became ready")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def bridge_process(tmp_path: Path):
    zmq_port, admin_port = _free_port(), _free_port()
    cfg = tmp_path / "bridge.yaml"
    cfg.write_text(
        f"machine: CliPC\ndata_dir: {tmp_path / 'data'}\n"
        f"zmq: {{bind_endpoint: 'tcp://127.0.0.1:{zmq_port}'}}\n"
        f"nats: {{embedded: {{port: 0}}}}\nadmin: {{port: {admin_port}, probe_interval_secs: 0.5}}\n"
        "health: {enabled: false}\n"  # the test counts every stored message: no heartbeats
    )
    log = tmp_path / "bridge.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([BUSBRIDGE, "run", "-c", str(cfg)], stderr=err)
    try:
        _wait_ready(admin_port, proc)
        yield proc, zmq_port, log, tmp_path / "data" / "nats"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_run_on_embedded_nats_then_sigterm_exits_0_and_stops_its_server(bridge_process) -> None:
    proc, zmq_port, log, store = bridge_process
    rows = [r for r in load_corpus() if r.dialect == "errpub_envelope"]
    with zmq.Context() as ctx:
        socks = connect_publishers(ctx, f"tcp://127.0.0.1:{zmq_port}", 1)
        replay(socks, rows)
        socks[0].close(linger=5000)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    text = log.read_text()
    server_pid = int(re.search(r"embedded nats-server pid (\d+)", text).group(1))
    assert not _alive(server_pid), "the embedded nats-server outlived the bridge"
    assert "shutdown: drained" in text
    with running_nats_server(store) as server:  # the same store dir: messages survived
        import anyio

        stored = anyio.run(fetch_all, server.url, "ERRBUS")
    assert len(stored) == len(rows)
    assert {m.msg.source for m in stored} == set(_sources(rows))


def _sources(rows) -> set[str]:
    import json

    return {json.loads(r.frames[0][6:])["source"] for r in rows}


def test_bad_config_exits_2_listing_problems(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("zmq: {rcvhwm: -1, mode: sideways}\nunknown_section: {}\n")
    result = subprocess.run(
        [BUSBRIDGE, "run", "-c", str(cfg)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    for path in ("zmq.rcvhwm", "zmq.mode", "unknown_section"):
        assert path in result.stderr


def test_sigterm_while_nats_is_unreachable_exits_promptly(tmp_path: Path) -> None:
    from loadtest.harness import BridgeProcess, free_port

    bridge = BridgeProcess(tmp_path, f"nats://127.0.0.1:{free_port()}")
    bridge.start()  # ZMQ and admin are up although NATS is not
    try:
        status = urllib.request.urlopen(f"http://127.0.0.1:{bridge.admin_port}/healthz").status
        assert status == 200
        started = time.monotonic()
        assert bridge.stop(timeout_secs=20) == 0
        assert time.monotonic() - started < 15
    finally:
        bridge.kill()
