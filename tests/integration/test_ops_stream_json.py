"""ops/nats/stream-ERRBUS.json is accepted by a real JetStream as a stream create request."""

from __future__ import annotations

import json
from pathlib import Path

import nats
import pytest

from bridge.adapters.nats_server import NatsServerProcess

pytestmark = pytest.mark.integration

STREAM_JSON = Path(__file__).resolve().parents[2] / "ops" / "nats" / "stream-ERRBUS.json"


async def test_stream_json_creates_the_stream(nats_server: NatsServerProcess) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        reply = await nc.request(
            "$JS.API.STREAM.CREATE.ERRBUS", STREAM_JSON.read_bytes(), timeout=5
        )
        body = json.loads(reply.data)
        assert "error" not in body, body
        assert (
            body["config"]["subjects"] == ["errbus.>"]
            and body["config"]["duplicate_window"] == 600 * 10**9
        )
    finally:
        await nc.close()
