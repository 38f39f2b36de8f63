"""A frame above ``zmq.max_frame_bytes`` is dead-lettered as ``oversized`` (head kept, size
recorded) and its publisher stays connected: later frames from the same socket are delivered."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
import zmq

from bridge.adapters.nats_server import NatsServerProcess
from contracts.messages import DeadLetter, DeadLetterReason, ErrorEvent
from loadtest.replay import connect_publishers
from tests.support.bridge import make_config, running_bridge
from tests.support.stream import fetch_all, wait_for_count

pytestmark = pytest.mark.integration

CAP, KEEP = 100_000, 1_000


def d1(n: int, blob: str = "") -> bytes:
    return (
        b'ERROR:{"message_type": "error_report", "source": "BigAgent", "timestamp": "2026-11-21T08:02:16.503872", '
        b'"error_data": {"error_id": "00000000-0000-4000-8000-0000000000%02d", "error_type": "x", "severity": "high", '
        % n
        + b'"details": {"blob": "'
        + blob.encode()
        + b'"}}}'
    )


async def test_oversized_frame_is_dead_lettered_and_the_publisher_keeps_delivering(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    big = d1(2, "y" * 300_000)
    cfg = make_config(
        nats_server.url,
        tmp_path,
        zmq={
            "max_frame_bytes": CAP,
            "oversized_keep_bytes": KEEP,
            "hard_max_frame_bytes": 1_000_000,
        },
    )
    async with running_bridge(cfg) as bridge:

        def send() -> None:
            with zmq.Context() as ctx:
                [sock] = connect_publishers(ctx, bridge.zmq_endpoints[0], 1)
                for frames in (
                    [d1(1)],
                    [b"ERROR:", big],
                    [d1(3)],
                ):  # the big one as a two-frame message
                    sock.send_multipart(frames)
                sock.close(linger=10_000)

        await anyio.to_thread.run_sync(send)
        assert await wait_for_count(nats_server.url, "ERRBUS", 3) == 3
        dead_letters = bridge.metrics.registry.get_sample_value(
            "busbridge_dead_letters_total", {"reason": "oversized"}
        )
        assert dead_letters == 1
    # the third frame came after the big one on the same connection: had libzmq dropped the peer
    # (ZMQ_MAXMSGSIZE), it would have been lost with the connection
    first, dead, last = (m.msg for m in await fetch_all(nats_server.url, "ERRBUS"))
    assert isinstance(first, ErrorEvent) and first.event_id.endswith("01")
    assert isinstance(last, ErrorEvent) and last.event_id.endswith("03")
    assert isinstance(dead, DeadLetter) and dead.reason is DeadLetterReason.OVERSIZED
    assert dead.frame_sizes == [len(b"ERROR:"), len(big)]
    assert dead.frames == [b"ERROR:", big[:KEEP]]
    assert dead.truncated is not None and dead.truncated.fields == ["frames"]
    assert dead.truncated.original_bytes == 6 + len(big) and dead.truncated.kept_bytes == 6 + KEEP
    assert str(CAP) in dead.detail
