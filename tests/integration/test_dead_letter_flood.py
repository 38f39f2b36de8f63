"""A broken agent sprays 50,000 undecodable frames (a few byte patterns) in under a second while
other agents report errors: the bridge stores at most a few hundred dead letters plus summaries,
stored dead letters + summarised counts == 50,000 exactly, and every error event is stored
(real nats-server, real ZMQ)."""

from __future__ import annotations

import random
from pathlib import Path

import anyio
import pytest
import zmq

from bridge.adapters.nats_server import NatsServerProcess
from contracts.messages import DeadLetter, DeadLetterSummary, ErrorEvent
from loadtest.producer import envelope
from loadtest.replay import connect_publishers
from tests.support.bridge import make_config, running_bridge
from tests.support.stream import fetch_all

pytestmark = pytest.mark.integration

GARBAGE = 50_000
EVENTS = 300
PATTERNS = [b"\xff\xfe garbage ", b"\x00\x00\x00\x01", b"\xde\xad\xbe\xef", b"ERROR:\xff\xfe"]


def _storm(endpoint: str) -> None:
    rng = random.Random(7)
    with zmq.Context() as ctx:
        bad, good = connect_publishers(ctx, endpoint, 2)
        for n in range(GARBAGE):
            bad.send(PATTERNS[n % len(PATTERNS)] + rng.randbytes(40))
            if n % (GARBAGE // EVENTS) == 0 and n // (GARBAGE // EVENTS) < EVENTS:
                good.send(envelope(1, n // (GARBAGE // EVENTS)))
        bad.close(linger=30_000)
        good.close(linger=30_000)


async def test_garbage_storm_is_summarised_and_real_errors_get_through(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    cfg = make_config(
        nats_server.url,
        tmp_path,
        dead_letters={"threshold": 20, "window_secs": 60, "summary_interval_secs": 1.0},
    )
    async with running_bridge(cfg) as bridge:
        await anyio.to_thread.run_sync(_storm, bridge.zmq_endpoints[0])
        with anyio.fail_after(60):
            while bridge.runner.received < GARBAGE + EVENTS:
                await anyio.sleep(0.1)
        await anyio.sleep(2.5)  # a summary interval: the counts so far are published
    # stopping flushed the open storms' last summaries
    stored = [m.msg for m in await fetch_all(nats_server.url, "ERRBUS")]
    letters = [m for m in stored if isinstance(m, DeadLetter)]
    summaries = [m for m in stored if isinstance(m, DeadLetterSummary)]
    events = [m for m in stored if isinstance(m, ErrorEvent)]
    assert len(events) == EVENTS
    assert len(letters) <= 20 * len(PATTERNS) + 100 * len(PATTERNS)  # a few hundred, with bytes
    assert len(letters) + sum(s.suppressed for s in summaries) == GARBAGE
    for key in {s.key for s in summaries}:
        of_key = [s for s in summaries if s.key == key]
        assert of_key[-1].ended and of_key[-1].suppressed_total == sum(s.suppressed for s in of_key)
    reg = bridge.metrics.registry
    suppressed = sum(
        reg.get_sample_value("busbridge_dead_letters_suppressed_total", {"reason": r}) or 0
        for r in ("invalid_utf8", "unknown_topic", "invalid_json", "empty_payload")
    )
    assert suppressed == GARBAGE - len(letters)
