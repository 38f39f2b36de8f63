"""``busbridge run`` at DEBUG against a nats-server that requires a password: the password
appears in no log line, whether it comes from an environment variable or (opted in) from
the server URL in the config, which the bridge logs."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import anyio
import pytest
import zmq

from loadtest.replay import connect_publishers
from tests.support.nats_server import running_nats_server
from tests.support.process import BridgeProcess
from tests.support.stream import wait_for_count

pytestmark = pytest.mark.integration

D1 = (
    b'ERROR:{"message_type": "error_report", "source": "LogAgent", "timestamp": "2026-11-21T08:02:16.503872", '
    b'"error_data": {"error_id": "00000000-0000-4000-8000-00000000b001", "error_type": "x", "severity": "high"}}'
)


@pytest.mark.parametrize("source", ["env", "url"])
async def test_password_never_reaches_the_log(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = "pw-" + secrets.token_hex(12)
    with running_nats_server(
        tmp_path / "nats",
        extra_config=f'authorization {{ user: bridge, password: "{password}" }}\n',
    ) as server:
        bridge = BridgeProcess(tmp_path, server.url, log_level="DEBUG")
        if source == "env":
            monkeypatch.setenv("BB_TEST_NATS_PASSWORD", password)  # inherited by the child
            nats = f"nats: {{servers: ['{server.url}'], user: bridge, password_env: BB_TEST_NATS_PASSWORD}}\n"
        else:
            url = server.url.replace("nats://", f"nats://bridge:{password}@")
            nats = f"allow_plaintext_secrets: true\nnats: {{servers: ['{url}']}}\n"
        text = bridge.config.read_text()
        bridge.config.write_text(text[: text.index("nats:")] + nats + text[text.index("admin:") :])
        try:
            bridge.start()
            await anyio.to_thread.run_sync(_send, bridge.endpoint)
            stored = await wait_for_count(server.url, "ERRBUS", 1, user="bridge", password=password)
        finally:
            status = bridge.stop()
    log = bridge.log.read_text()
    assert status == 0 and stored == 1 and "NATS " in log and "DEBUG" in log
    assert password not in log
    if source == "url":
        assert "nats://***@127.0.0.1" in log  # the URL is logged, its credentials are not
    assert (
        os.environ.get("BB_TEST_NATS_PASSWORD", password) == password
    )  # the child had it, the log does not


def _send(endpoint: str) -> None:
    with zmq.Context() as ctx:
        [sock] = connect_publishers(ctx, endpoint, 1)
        sock.send(D1)
        sock.close(linger=10_000)
