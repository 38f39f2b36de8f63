"""Both publishers through a real bridge and nats-server: fast-ingest batches (``auto`` on a
2.14+ server, and ``batch``) and one PubAck per message (``pipelined``, and ``auto`` when the
server is older), each storing a steady stream exactly once and in order."""

from __future__ import annotations

from pathlib import Path

import anyio
import nats
import pytest

import bridge.app
from bridge.adapters.nats_server import NatsServerProcess
from bridge.app import Bridge
from bridge.errors import ProvisioningError
from loadtest.producer import SteadyProducer
from tests.support.bridge import make_config, running_bridge
from tests.support.order import assert_exactly_once_in_order
from tests.support.stream import fetch_all, wait_for_count

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("mode", "server_version", "expected"),
    [
        ("auto", None, "batch"),
        ("batch", None, "batch"),
        ("pipelined", None, "pipelined"),
        ("auto", "2.11.0", "pipelined"),  # an older server: the per-message path
    ],
)
async def test_publish_mode_stores_everything_once_in_order(
    nats_server: NatsServerProcess,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    server_version: str | None,
    expected: str,
) -> None:
    if server_version is not None:
        monkeypatch.setattr(bridge.app, "server_version", lambda nc: server_version)
    cfg = make_config(nats_server.url, tmp_path, publish={"mode": mode})
    async with running_bridge(cfg) as running:
        assert running.publisher is not None and running.publisher.mode == expected
        producer = SteadyProducer(running.zmq_endpoints[0], publishers=3, rate=600)
        await anyio.to_thread.run_sync(producer.start)
        await anyio.sleep(2.0)
        await anyio.to_thread.run_sync(producer.stop)
        expected_ids = {f"p{p:03d}-{n:09d}" for p, sent in enumerate(producer.sent) for n in sent}
        n = await wait_for_count(nats_server.url, "ERRBUS", len(expected_ids), timeout_secs=30)
        assert n == len(expected_ids)
    assert_exactly_once_in_order(await fetch_all(nats_server.url, "ERRBUS"), expected_ids)
    nc = await nats.connect(nats_server.url)
    try:
        config = (await nc.jetstream().stream_info("ERRBUS")).config
        assert bool(config.allow_batched) == (expected == "batch")
    finally:
        await nc.close()


async def test_batch_mode_is_refused_on_a_server_without_batches(
    nats_server: NatsServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``publish.mode: batch`` asks for what the server cannot do: the bridge stops with a clear
    error at connect instead of retrying batches forever."""
    monkeypatch.setattr(bridge.app, "server_version", lambda nc: "2.12.3")
    cfg = make_config(nats_server.url, tmp_path, publish={"mode": "batch"})
    with pytest.raises(BaseExceptionGroup) as info, anyio.fail_after(30):
        await Bridge(cfg).serve()
    errors = info.value.exceptions
    while len(errors) == 1 and isinstance(errors[0], BaseExceptionGroup):
        errors = errors[0].exceptions
    assert isinstance(errors[0], ProvisioningError)
    assert "publish.mode batch needs nats-server >= 2.14 (connected: 2.12.3)" in str(errors[0])
