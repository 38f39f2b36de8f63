"""The server ceiling: the fastest JetStream publisher available in Python here (DESIGN §7).

Pipelined raw publishing, no ZMQ, no decode on the clock: the message set of the run
(``loadtest.baselines.message_frames``) is turned into exactly what busbridge stores
(subject, JSON payload, headers with ``Nats-Msg-Id``; ``BridgeEncoder``) *before* timing,
then sent with ``nc.publish(subject, payload, reply=<inbox>.<k>, headers=...)`` (through
``bridge.adapters.jetstream.publish_fast``, the same bytes without nats-py's per-header
regexes, as busbridge sends them) keeping up to
``window`` messages in flight, with one wildcard subscription ``<inbox>.*`` counting the
PubAcks. Throughput = PubAcks that say stored / (first publish -> last PubAck).

The stream must exist (``baselines.create_stream``: file storage, the bridge's duplicate
window). Runs in its own process (``run_ceiling`` starts ``python -m loadtest.ceiling`` and
reads one JSON ``ThroughputRun`` from its stdout), so nothing else shares its GIL.

Usage: ``python -m loadtest.ceiling --url nats://127.0.0.1:4222 --count 100000``
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time

import msgspec
import nats
from nats.aio.msg import Msg

from bridge.adapters.jetstream import publish_fast
from loadtest.baselines import BridgeEncoder, ThroughputRun, message_frames, stream_state

__all__ = ["publish_pipelined", "run_ceiling"]


class _Acks:
    """Counts PubAcks and keeps the window: ``room`` is set whenever a slot frees up."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.stored = self.duplicates = self.errors = 0
        self.in_flight = 0
        self.room = asyncio.Event()
        self.done = asyncio.Event()
        self.last_at = 0.0

    async def on_ack(self, msg: Msg) -> None:
        self.in_flight -= 1
        data = msg.data
        if not data or b'"error"' in data:  # an API error, or a 503 status with no body
            self.errors += 1
        elif b'"duplicate":true' in data:
            self.duplicates += 1
        else:
            self.stored += 1
        self.room.set()
        if self.stored + self.duplicates + self.errors >= self.total:
            self.last_at = time.perf_counter()
            self.done.set()


async def publish_pipelined(
    nc: nats.NATS,
    items: list[tuple[str, bytes, dict[str, str]]],
    *,
    window: int = 1024,
    timeout_secs: float = 120.0,
) -> tuple[_Acks, float]:
    """Publish ``items`` with up to ``window`` in flight; return the ack tally and seconds from
    the first publish to the last PubAck. Raises ``TimeoutError`` when PubAcks stop coming."""
    acks = _Acks(len(items))
    inbox = nc.new_inbox()
    sub = await nc.subscribe(
        f"{inbox}.*", cb=acks.on_ack, pending_msgs_limit=-1, pending_bytes_limit=-1
    )
    started = time.perf_counter()
    for k, (subject, payload, headers) in enumerate(items):
        while acks.in_flight >= window:
            acks.room.clear()
            await asyncio.wait_for(acks.room.wait(), timeout_secs)
        acks.in_flight += 1
        await publish_fast(nc, subject, payload, f"{inbox}.{k}", headers)
    await nc.flush()
    await asyncio.wait_for(acks.done.wait(), timeout_secs)
    await sub.unsubscribe()
    return acks, acks.last_at - started


async def _measure(
    url: str, count: int, publishers: int, pad_bytes: int, window: int
) -> ThroughputRun:
    encoder = BridgeEncoder()
    items = [
        (o.subject, o.payload, o.headers)
        for o in (encoder.encode(f) for _, f in message_frames(count, publishers, pad_bytes))
    ]
    nc = await nats.connect(url)
    try:
        acks, elapsed = await publish_pipelined(nc, items, window=window)
        stored = (await stream_state(nc)).messages
    finally:
        await nc.close()
    return ThroughputRun(
        target="ceiling",
        sent=count,
        stored=stored,
        elapsed_secs=round(elapsed, 4),
        throughput_per_sec=round(acks.stored / elapsed) if elapsed > 0 else 0.0,
        lossless=stored == count and acks.errors == 0 and acks.duplicates == 0,
        extra={
            "acked_stored": acks.stored,
            "acked_duplicate": acks.duplicates,
            "ack_errors": acks.errors,
            "window": window,
            "payload_bytes": len(items[0][1]) if items else 0,
        },
    )


def run_ceiling(
    url: str,
    count: int,
    publishers: int = 4,
    *,
    pad_bytes: int = 120,
    window: int = 1024,
    timeout_secs: float = 300.0,
) -> ThroughputRun:
    """Run the ceiling publisher in a child process against ``url`` (stream already created).

    Raises ``RuntimeError`` when the child fails; ``subprocess.TimeoutExpired`` (child killed)
    after ``timeout_secs``."""
    cmd = [
        sys.executable,
        "-m",
        "loadtest.ceiling",
        "--url",
        url,
        "--count",
        str(count),
        "--publishers",
        str(publishers),
        "--pad-bytes",
        str(pad_bytes),
        "--window",
        str(window),
    ]
    done = subprocess.run(cmd, capture_output=True, timeout=timeout_secs)
    if done.returncode != 0:
        raise RuntimeError(
            f"ceiling publisher exited {done.returncode}: {done.stderr.decode()[-2000:]}"
        )
    return msgspec.json.decode(done.stdout.strip().splitlines()[-1], type=ThroughputRun)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="NATS server URL (the stream must exist)")
    p.add_argument("--count", type=int, default=100_000, help="messages to publish")
    p.add_argument(
        "--publishers", type=int, default=4, help="legacy publishers the message set is spread over"
    )
    p.add_argument("--pad-bytes", type=int, default=120, help="filler per legacy frame")
    p.add_argument("--window", type=int, default=1024, help="messages in flight at most")
    args = p.parse_args(argv)
    run = asyncio.run(_measure(args.url, args.count, args.publishers, args.pad_bytes, args.window))
    sys.stdout.write(msgspec.json.encode(run).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
