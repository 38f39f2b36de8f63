"""A legacy message larger than the server's max_payload is stored truncated with a
marker, never lost (legacy-bus.md trap 11: a 1.1 MB context)."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
import zmq

from bridge.adapters.nats_server import NatsServerProcess
from contracts.messages import DeadLetter, ErrorEvent
from loadtest.replay import connect_publishers
from tests.support.bridge import make_config, running_bridge
from tests.support.stream import fetch_all, wait_for_count

pytestmark = pytest.mark.integration

BIG_D1 = (
    b"ERROR:"
    + json.dumps(
        {
            "message_type": "error_report",
            "source": "FaceRecognitionAgent",
            "timestamp": "2026-11-21T08:02:16.507648",
            "error_data": {
                "error_id": "11111111-2222-4333-8444-555555555555",
                "error_type": "context_overflow",
                "severity": "critical",
                "details": {"blob": "x" * 1_150_000},
            },
        }
    ).encode()
)
BIG_GARBAGE = b"ERROR:\xff" + b"\xfe" * 1_200_000


async def test_oversized_messages_are_stored_truncated_with_a_marker(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    async with running_bridge(make_config(nats_server.url, tmp_path)) as bridge:

        def send() -> None:
            with zmq.Context() as ctx:
                [sock] = connect_publishers(ctx, bridge.zmq_endpoints[0], 1)
                sock.send(BIG_D1)
                sock.send(BIG_GARBAGE)
                sock.close(linger=10_000)

        await anyio.to_thread.run_sync(send)
        assert await wait_for_count(nats_server.url, "ERRBUS", 2) == 2
    event, dead = (m.msg for m in await fetch_all(nats_server.url, "ERRBUS"))
    assert isinstance(event, ErrorEvent) and isinstance(dead, DeadLetter)
    assert (
        event.event_id == "11111111-2222-4333-8444-555555555555"
        and event.error_type == "context_overflow"
    )
    assert event.truncated is not None and event.truncated.fields == ["details"]
    assert event.truncated.original_bytes > 1_150_000 > event.truncated.kept_bytes
    assert isinstance(event.details, str) and event.details.startswith('{"blob":"xxx')
    assert dead.frame_sizes == [len(BIG_GARBAGE)] and dead.truncated is not None
    assert BIG_GARBAGE.startswith(dead.frames[0]) and len(dead.frames[0]) > 500_000
