"""``busbridge status`` (the console script, a real process) against a running bridge: the screen
shows what the bridge did with frames from a real ZMQ publisher, and says when NATS is gone."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
import zmq

from bridge.adapters.nats_server import NatsServerProcess
from loadtest.harness import BUSBRIDGE
from loadtest.replay import connect_publishers
from tests.support.bridge import make_config, running_bridge
from tests.support.frames import d1_frame
from tests.support.http import http_get
from tests.support.stream import wait_for_count

pytestmark = pytest.mark.integration

DEAD = [b"ERROR:{this is not json", b"hello, nobody expects this topic"]


async def _status(*args: str) -> tuple[int, str]:
    result = await anyio.run_process(
        [BUSBRIDGE, "status", "--interval-secs", "0.2", *args], check=False
    )
    return result.returncode, result.stdout.decode()


def _line(screen: str, label: str) -> str:
    [line] = [ln for ln in screen.splitlines() if ln.split(" ", 1)[0] == label]
    return line[12:]


async def _expected_phase(url: str) -> str:
    status, body = await http_get(f"{url}/phase")
    return json.loads(body).get("phase", "-") if status == 200 else "-"


async def test_status_screen_of_a_running_bridge(tmp_path: Path) -> None:
    server = NatsServerProcess(tmp_path / "nats")
    server.start()
    ctx = zmq.Context()
    try:
        async with running_bridge(make_config(server.url, tmp_path / "bridge")) as bridge:
            url = f"http://127.0.0.1:{bridge.admin_port}"
            [pub] = await anyio.to_thread.run_sync(
                connect_publishers, ctx, bridge.zmq_endpoints[0], 1
            )
            for i in range(5):
                pub.send(d1_frame(f"00000000-0000-4000-8000-00000000000{i}", "StatusAgent"))
            for frame in DEAD:
                pub.send(frame)
            assert await wait_for_count(server.url, "ERRBUS", 7) >= 7

            code, screen = await _status("--admin", url)
            assert code == 0, screen
            assert _line(screen, "state") == "ready"
            assert _line(screen, "phase").split()[0] == await _expected_phase(url)
            assert _line(screen, "ingest").startswith("7 frames (")
            assert "  5 decoded  2 dead letters (" in _line(screen, "ingest")
            assert _line(screen, "spool").startswith("0 messages  0 B")
            assert _line(screen, "nats") == "connected  0 reconnects"
            assert _line(screen, "publishers").startswith("1 ZMQ connections")
            assert _line(screen, "floods") == "0 active  0 suppressed (0.0/s)  0 flood events"

            config = tmp_path / "status.yaml"  # the same bridge found through a config file
            config.write_text(
                f"machine: TestPC\nadmin: {{host: 0.0.0.0, port: {bridge.admin_port}}}\n"
            )
            code, screen = await _status("-c", str(config))
            assert code == 0 and screen.startswith(f"busbridge TestPC  {url}  (rates over ")

            server.stop()  # NATS gone: the screen says so and the exit status is 3
            with anyio.fail_after(20):
                while (result := await _status("--admin", url))[0] != 3:
                    await anyio.sleep(0.2)
            code, screen = result
            assert "nats_disconnected" in _line(screen, "state")
            assert _line(screen, "nats").startswith("disconnected")
    finally:
        ctx.destroy(linger=0)  # closes every socket it made
        server.stop()


async def test_status_of_nothing_exits_1(tmp_path: Path) -> None:
    from loadtest.harness import free_port

    code, screen = await _status("--admin", f"http://127.0.0.1:{free_port()}")
    assert code == 1 and screen == ""
